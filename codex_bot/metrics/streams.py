"""``StreamFigures``: a group's pending count, lag and dead letters, read from Redis and cached.

A Prometheus collector is synchronous and may run on another thread, while the Redis client
belongs to the event loop. So the figures are read on the loop, at most once per
``max_age`` seconds, and a scrape only reads the cache: ``refresh()`` (awaited by the
``/metrics`` handler of ``codex_bot.health``) brings it up to date first, and ``kick()``
(called by the collector itself) starts a refresh on the loop without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from redis.exceptions import RedisClusterException, RedisError

from codex_bot.ops import OpsError, StreamOps
from codex_bot.redis.types import AnyRedis

logger = logging.getLogger(__name__)

_FAILED = (OpsError, RedisError, RedisClusterException, OSError, TimeoutError)
"""What a refresh may run into: Redis down or slow (a cluster no node of which answers), the
stream or group not there (yet)."""


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """The figures of one refresh; None for what Redis could not tell.

    Attributes:
        pending: Entries delivered to the group's consumers and not acknowledged.
        lag: Entries no consumer of the group has read yet.
        oldest_pending_age: Seconds the oldest pending entry has waited since a consumer last
            received it (see ``GroupStats.oldest_pending_age_ms``).
        dead_letters: Letters in the dead-letter stream.
    """

    pending: int | None = None
    lag: int | None = None
    oldest_pending_age: float | None = None
    dead_letters: int | None = None


_NOTHING = StreamSnapshot()


class StreamFigures:
    """Cached figures of one stream and consumer group.

    Args:
        redis: A client of the Redis (or the ``RedisCluster``) that holds the stream.
        stream: The stream (with partitions: one partition's stream).
        group: The consumer group.
        dead_letter_stream: Its dead-letter stream.
        max_age: Seconds a refresh is reused before Redis is asked again.
        timeout: Seconds one refresh may take; after that the figures are unknown.
    """

    def __init__(
        self,
        redis: AnyRedis,
        stream: str,
        group: str,
        dead_letter_stream: str,
        *,
        max_age: float = 5.0,
        timeout: float = 2.0,
    ) -> None:
        self.stream, self.group = stream, group
        self.max_age = max_age
        self.timeout = timeout
        self._ops = StreamOps(redis, stream, group=group, dead_letter_stream=dead_letter_stream)
        self._snapshot = _NOTHING
        self._taken = -float("inf")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def snapshot(self) -> StreamSnapshot:
        """The figures of the last refresh (all None before the first, or after a failure)."""
        return self._snapshot

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop refreshes run on (the one the Redis client and the processor use)."""
        self._loop = loop

    def _stale(self) -> bool:
        return time.monotonic() - self._taken >= self.max_age

    async def refresh(self) -> StreamSnapshot:
        """Read the figures from Redis unless the last read is younger than ``max_age``.

        Concurrent callers share one read; a read that fails or times out leaves every
        figure unknown (None) until the next one succeeds.

        Returns:
            The figures, fresh or at most ``max_age`` seconds old.
        """
        self._loop = asyncio.get_running_loop()
        if self._task is None and self._stale():
            self._start()
        if self._task is not None:
            await asyncio.shield(self._task)
        return self._snapshot

    def kick(self) -> None:
        """Start a refresh on the bound loop if the figures are stale; never waits.

        Safe to call from any thread (a collector runs on the scraping thread).
        """
        loop = self._loop
        if loop is None or loop.is_closed() or self._task is not None or not self._stale():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to refresh
            loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                self._snapshot = await self._figures()
        except _FAILED as exc:
            logger.debug("no figures for %s/%s: %r", self.stream, self.group, exc)
            self._snapshot = _NOTHING
        finally:
            self._taken = time.monotonic()
            self._task = None

    async def _figures(self) -> StreamSnapshot:
        [group] = await self._ops.groups()
        age_ms = group.oldest_pending_age_ms
        try:
            dead: int | None = await self._ops.dead.count()
        except RedisError:  # the key holds something else: the figures above still count
            dead = None
        return StreamSnapshot(
            pending=group.pending,
            lag=group.lag,
            oldest_pending_age=None if age_ms is None else age_ms / 1000,
            dead_letters=dead,
        )
