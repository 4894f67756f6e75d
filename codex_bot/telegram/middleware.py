"""``RateLimitMiddleware``: paces a Bot's requests by Telegram's limits, 429s as back-pressure.

Install it on the Bot's session; it then covers everything the bot sends::

    bot.session.middleware(RateLimitMiddleware(redis, TelegramLimits(), max_flood_wait=60.0))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import replace
from typing import TYPE_CHECKING

from aiogram.client.session.middlewares.base import BaseRequestMiddleware
from aiogram.exceptions import TelegramMigrateToChat, TelegramRetryAfter
from redis.asyncio import Redis

from codex_bot.telegram.budget import SharedBudget
from codex_bot.telegram.limiter import DEFAULT_KEY_PREFIX, ChatId
from codex_bot.telegram.limits import TelegramLimits
from codex_bot.telegram.methods import PacedRequest, paced_request
from codex_bot.telegram.stats import RateLimitStats

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.client.session.middlewares.base import NextRequestMiddlewareType
    from aiogram.methods import Response, TelegramMethod
    from aiogram.methods.base import TelegramType

logger = logging.getLogger(__name__)

_pacing: ContextVar[RateLimitMiddleware | None] = ContextVar("codex_bot_pacing", default=None)
"""The middleware pacing the request being sent, for a second one on the same chain."""


class RateLimitMiddleware(BaseRequestMiddleware):
    """An aiogram request middleware that keeps a bot under Telegram's flood limits.

    Every request that puts a message into a chat or edits one (see
    :func:`codex_bot.telegram.methods.paced_request`) waits for its turn under the
    bot-wide budget (``paid_per_second`` with ``allow_paid_broadcast=True``) and its chat's
    budget. The budgets live in Redis under the bot's id, so every process using the same
    Redis and bot token shares them. Other requests pass untouched, without a Redis call.

    Requests to one chat go out one at a time, in the order they reached the middleware,
    so a request sent again after a 429 keeps its place.

    - A request waits at most ``max_flood_wait`` for the chat's earlier requests and its
      own turn together. A turn further away is not booked: the caller gets
      ``TelegramRetryAfter`` with the seconds until that turn, without Telegram being asked.
    - A 429 whose ``retry_after`` is at most ``max_flood_wait`` (and keeps the request's
      429 waits within ``max_flood_wait`` in total) holds the chat in Redis (the whole bot
      when a second chat is flooded meanwhile, for the shorter of the two holds), waits, and
      sends the request again; the caller sees the success. A longer one reaches the
      caller as ``TelegramRetryAfter``.
    - ``TelegramMigrateToChat``: the request is sent once more to the supergroup, with a
      WARNING; store the new chat id.
    - Redis unreachable: requests go out unpaced (one WARNING per outage) and 429s are
      still absorbed, waiting in this process.

    Args:
        redis: The asyncio client holding the budgets.
        limits: The limits to pace by (default: Telegram's).
        max_flood_wait: The longest wait, in seconds, for a turn or a 429.
        key_prefix: Start of every Redis key (keys are ``<prefix>:{<bot_id>}:...``).
        redis_timeout: Seconds a booking may take before Redis counts as unreachable.

    Installed twice on one session (the same object, or two), the outer one paces and the
    inner one passes requests through, with one WARNING: pacing twice would halve the rate,
    and the same object would wait for the chat it holds itself.

    Raises:
        TypeError: If ``redis`` is None, ``limits`` is not a :class:`TelegramLimits`, or a
            number of seconds is not a number.
        ValueError: If ``max_flood_wait`` is negative or not finite, or ``redis_timeout``
            is not a positive finite number of seconds.

    Attributes:
        stats: Counters for metrics (:class:`RateLimitStats`).
        budget: The shared budgets; ``budget.reachable`` is false during a Redis outage.
    """

    def __init__(
        self,
        redis: Redis,
        limits: TelegramLimits | None = None,
        *,
        max_flood_wait: float = 60.0,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        redis_timeout: float = 1.0,
    ) -> None:
        if redis is None:
            msg = "RateLimitMiddleware needs the redis.asyncio client that holds the budgets"
            raise TypeError(msg)
        if limits is not None and not isinstance(limits, TelegramLimits):
            msg = f"limits must be a TelegramLimits, got {limits!r}"
            raise TypeError(msg)
        for name, value in (("max_flood_wait", max_flood_wait), ("redis_timeout", redis_timeout)):
            if not isinstance(value, int | float) or isinstance(value, bool):
                msg = f"{name} must be a number of seconds, got {value!r}"
                raise TypeError(msg)
        if not 0 <= max_flood_wait < math.inf:
            msg = f"max_flood_wait must be a finite number of seconds >= 0, got {max_flood_wait}"
            raise ValueError(msg)
        if not 0 < redis_timeout < math.inf:
            msg = f"redis_timeout must be a finite number of seconds > 0, got {redis_timeout}"
            raise ValueError(msg)
        self.limits = limits or TelegramLimits()
        self.max_flood_wait = max_flood_wait
        self.stats = RateLimitStats()
        self.budget = SharedBudget(redis, self.limits, key_prefix, redis_timeout)
        self._lanes: dict[tuple[int, str], tuple[asyncio.Lock, int]] = {}
        self._warned_twice = False

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
    ) -> Response[TelegramType]:
        """Send ``method`` when its turn comes; see the class docstring for what may happen.

        Raises:
            TelegramRetryAfter: The turn is beyond ``max_flood_wait``, or Telegram asked to
                wait longer than that.
        """
        request = paced_request(method)
        if request is None:
            return await make_request(bot, method)
        if _pacing.get() is not None:
            self._warn_twice()
            return await make_request(bot, method)
        self.stats.paced += 1
        deadline = asyncio.get_running_loop().time() + self.max_flood_wait
        token = _pacing.set(self)
        try:
            async with self._lane(bot.id, request.chat_id, deadline, method):
                return await self._send(make_request, bot, method, request, deadline)
        finally:
            _pacing.reset(token)

    def _warn_twice(self) -> None:
        if not self._warned_twice:
            self._warned_twice = True
            logger.warning(
                "RateLimitMiddleware is installed twice on one bot session: the outer one "
                "paces, this one passes requests through; install it once"
            )

    async def _send(
        self,
        make_request: NextRequestMiddlewareType[TelegramType],
        bot: Bot,
        method: TelegramMethod[TelegramType],
        request: PacedRequest,
        deadline: float,
    ) -> Response[TelegramType]:
        hold, held, migrated = 0.0, 0.0, False
        max_wait = max(0.0, deadline - asyncio.get_running_loop().time())
        while True:
            await self._wait_turn(bot.id, method, request, hold, max_wait)
            try:
                return await make_request(bot, method)
            except TelegramRetryAfter as exc:
                held += exc.retry_after
                if held > self.max_flood_wait:
                    self.stats.flood_raised += 1
                    # Telegram holds the chat that long anyway: the next requests are
                    # refused at once instead of being sent only to get another 429.
                    await self.budget.reserve(bot.id, request, max_wait=-1, hold=exc.retry_after)
                    raise
                self.stats.flood_absorbed += 1
                hold, max_wait = float(exc.retry_after), self.max_flood_wait
                logger.info(
                    "429 from Telegram for %s in chat %s: holding it %s s, then sending again",
                    method.__api_method__,
                    request.chat_id,
                    exc.retry_after,
                )
            except TelegramMigrateToChat as exc:
                if migrated:
                    raise
                migrated, hold, max_wait = True, 0.0, self.max_flood_wait
                method, request = self._migrate(method, request, exc.migrate_to_chat_id)

    async def _wait_turn(
        self,
        bot_id: int,
        method: TelegramMethod[TelegramType],
        request: PacedRequest,
        hold: float,
        max_wait: float,
    ) -> None:
        turn = await self.budget.reserve(bot_id, request, max_wait=max_wait, hold=hold)
        if turn is None:
            self.stats.unpaced += 1
            wait = hold
        elif turn.granted:
            wait = turn.wait
        else:
            self.stats.refused += 1
            raise TelegramRetryAfter(
                method=method,
                message=f"the chat's next turn is {turn.wait:.1f} s away, beyond max_flood_wait",
                retry_after=math.ceil(turn.wait),
            )
        if wait > 0:
            self.stats.waited += 1
            self.stats.wait_seconds += wait
            await asyncio.sleep(wait)

    def _migrate(
        self, method: TelegramMethod[TelegramType], request: PacedRequest, new_chat_id: int
    ) -> tuple[TelegramMethod[TelegramType], PacedRequest]:
        self.stats.migrations += 1
        logger.warning(
            "Chat %s was migrated to supergroup %s: %s sent there; store the new chat id",
            request.chat_id,
            new_chat_id,
            method.__api_method__,
        )
        return (
            method.model_copy(update={"chat_id": new_chat_id}),
            replace(request, chat_id=new_chat_id),
        )

    @contextlib.asynccontextmanager
    async def _lane(
        self,
        bot_id: int,
        chat_id: ChatId | None,
        deadline: float,
        method: TelegramMethod[TelegramType],
    ) -> AsyncIterator[None]:
        """One request at a time per chat, in arrival order, waiting until ``deadline`` at most."""
        if chat_id is None:
            yield
            return
        key = (bot_id, str(chat_id).lower())
        lock, users = self._lanes.get(key) or (asyncio.Lock(), 0)
        self._lanes[key] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await lock.acquire()
            except TimeoutError:
                self.stats.refused += 1
                raise TelegramRetryAfter(
                    method=method,
                    message="the chat's earlier requests still wait after max_flood_wait",
                    retry_after=math.ceil(self.max_flood_wait),
                ) from None
            try:
                yield
            finally:
                lock.release()
        finally:
            lock, users = self._lanes[key]
            if users > 1:
                self._lanes[key] = (lock, users - 1)
            else:
                del self._lanes[key]
