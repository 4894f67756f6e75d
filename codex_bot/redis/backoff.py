"""Capped exponential backoff, and Redis outages logged once as they start and once as they end."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codex_bot.redis.stats import ProcessorStats

logger = logging.getLogger(__name__)

MIN_BACKOFF = 0.05
"""Seconds of the first wait after a failed attempt."""
_UNREACHABLE = (OSError, RedisConnectionError, RedisTimeoutError)
"""Errors that mean Redis cannot be reached (``BusyLoadingError`` included), not a bug."""


class Backoff:
    """Waits that double from ``first`` up to ``maximum``; ``reset()`` after a success.

    Args:
        maximum: The longest wait, in seconds.
        first: The first wait, in seconds.
    """

    def __init__(self, maximum: float, first: float = MIN_BACKOFF) -> None:
        self.first = first
        self.maximum = max(maximum, first)
        self._delay = first

    def reset(self) -> None:
        """Start again from the shortest wait."""
        self._delay = self.first

    def next_delay(self) -> float:
        """The current delay, doubled for the next failure (for callers that sleep themselves)."""
        delay = self._delay
        self._delay = min(delay * 2, self.maximum)
        return delay

    async def sleep(self) -> None:
        """Wait the current delay, then double it for the next failure."""
        await asyncio.sleep(self.next_delay())


class Outage:
    """Whether the loops of one processor reach Redis; each outage is logged once.

    Every failed attempt is counted in ``stats.errors``; the first one of an outage is logged
    (a warning when Redis is unreachable, an error with the traceback for anything else), the
    others at DEBUG, and the end of the outage once more with its length.

    Args:
        stream_name: The stream the log lines name.
        stats: The processor's counters.
        log: Where the lines go (the processor's logger).
    """

    def __init__(
        self, stream_name: str, stats: ProcessorStats, log: logging.Logger = logger
    ) -> None:
        self.stream_name = stream_name
        self.stats = stats
        self.log = log
        self.since: float | None = None
        """Loop time the current outage started; None while Redis answers."""

    def failed(self, exc: BaseException) -> None:
        """Count a failed attempt; log it if it starts an outage."""
        self.stats.errors += 1
        if self.since is not None:
            self.log.debug("still failing on %s: %r", self.stream_name, exc)
            return
        self.since = asyncio.get_running_loop().time()
        if isinstance(exc, _UNREACHABLE):
            self.log.warning(
                "Redis unavailable for %s, retrying with backoff: %r", self.stream_name, exc
            )
        else:
            self.log.error(
                "error consuming %s, retrying with backoff", self.stream_name, exc_info=exc
            )

    def recovered(self) -> None:
        """A call succeeded: end the outage, if there was one."""
        if self.since is not None:
            seconds = asyncio.get_running_loop().time() - self.since
            self.since = None
            self.log.warning("Redis reachable again for %s after %.1fs", self.stream_name, seconds)
