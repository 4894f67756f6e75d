"""``SharedBudget``: the middleware's view of the flood budgets, Redis outages included.

While Redis cannot be reached the bot keeps answering users: requests go out unpaced (a
429's ``retry_after`` is still honoured, in this process only), the outage is logged once at
WARNING, and Redis is asked again after ``_RETRY_INTERVAL`` seconds rather than on every
request. Its return is logged once at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codex_bot.telegram.limiter import FloodLimiter, Turn
from codex_bot.telegram.limits import TelegramLimits
from codex_bot.telegram.methods import PacedRequest

logger = logging.getLogger(__name__)

_RETRY_INTERVAL: Final = 1.0
"""Seconds between two attempts to reach Redis during an outage."""

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, TimeoutError)
"""What an outage looks like; ReadOnlyError is a replica left behind by a failover."""


class SharedBudget:
    """Books turns in Redis, and lets requests through unpaced while Redis is unreachable.

    Args:
        redis: The asyncio client the budgets live in.
        limits: The limits to pace by.
        key_prefix: Start of every key.
        redis_timeout: Seconds one booking may take before Redis counts as unreachable.
    """

    def __init__(
        self, redis: Redis, limits: TelegramLimits, key_prefix: str, redis_timeout: float
    ) -> None:
        self._redis = redis
        self._limits = limits
        self._key_prefix = key_prefix
        self._timeout = redis_timeout
        self._limiters: dict[int, FloodLimiter] = {}
        self._down_since: float | None = None
        self._next_try = 0.0

    @property
    def reachable(self) -> bool:
        """False from a failed booking until the next one that succeeds."""
        return self._down_since is None

    def limiter(self, bot_id: int) -> FloodLimiter:
        """The limiter of one bot (a middleware may serve several bots' sessions)."""
        limiter = self._limiters.get(bot_id)
        if limiter is None:
            limiter = FloodLimiter(self._redis, bot_id, self._limits, key_prefix=self._key_prefix)
            self._limiters[bot_id] = limiter
        return limiter

    async def reserve(
        self, bot_id: int, request: PacedRequest, *, max_wait: float, hold: float
    ) -> Turn | None:
        """Book the request's turn, holding its chat for ``hold`` seconds first.

        Args:
            bot_id: The bot sending the request.
            request: Its chat, cost and budget.
            max_wait: Book only if the turn is at most this many seconds away.
            hold: A 429's ``retry_after``, or 0.

        Returns:
            The turn, or ``None`` if Redis is unreachable (the caller sends unpaced, after
            ``hold`` seconds).
        """
        if self._down_since is not None and time.monotonic() < self._next_try:
            return None
        limiter = self.limiter(bot_id)
        try:
            async with asyncio.timeout(self._timeout):
                turn = await limiter.reserve(
                    request.chat_id,
                    cost=request.cost,
                    paid=request.paid,
                    max_wait=max_wait,
                    hold=hold,
                )
        except _UNREACHABLE as exc:
            self._next_try = time.monotonic() + _RETRY_INTERVAL
            if self._down_since is None:
                self._down_since = time.monotonic()
                logger.warning(
                    "Telegram flood control: Redis unreachable (%s: %s); sending without "
                    "pacing until it is back",
                    type(exc).__name__,
                    exc,
                )
            return None
        if self._down_since is not None:
            logger.info(
                "Telegram flood control: Redis reachable again after %.1f s; pacing resumed",
                time.monotonic() - self._down_since,
            )
            self._down_since = None
        return turn
