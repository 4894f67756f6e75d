"""``FloodLimiter``: one bot's Telegram flood budgets in Redis, shared by every process.

Each limited request books its turn with one Lua script (``reserve.lua``) that checks and
books the bot-wide (or paid) budget and the chat's budget together, on Redis's clock, and
answers how long the caller has to wait. The caller then sleeps that long locally: no
polling, one round trip per request.

The budgets are GCRA-style schedules: consecutive messages under the bot-wide budget start
``bot_interval`` apart; a request whose chat makes it wait books a later interval and leaves
the earlier free time to other chats. Private chats are spaced ``chat_interval`` apart;
groups are spaced the same and hold at most ``per_group_per_minute`` starts per
``group_window``. All of a bot's keys share the hash tag ``{<bot_id>}`` (one Redis Cluster
slot); a chat's key expires about a second after the chat stops constraining anything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

from redis.asyncio import Redis

from codex_bot.telegram.limits import TelegramLimits

ChatId = int | str

DEFAULT_KEY_PREFIX: Final = "codex:tg"
_NO_CHAT, _PRIVATE, _GROUP = 0, 1, 2
_NUMERIC = re.compile(r"-?\d+")
_SCRIPT: Final = resources.files(__package__).joinpath("reserve.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Turn:
    """A request's turn as the limiter answered it.

    Attributes:
        granted: The turn is booked; the caller sends after ``wait`` seconds. When false,
            nothing was booked: the turn was further away than the caller's ``max_wait``.
        wait: Seconds from the answer until the turn.
    """

    granted: bool
    wait: float


class FloodLimiter:
    """A bot's flood budgets in Redis: the bot-wide one, the paid one and one per chat.

    Args:
        redis: An asyncio client; ``decode_responses`` may be on or off.
        bot_id: The bot's id (the number before ``:`` in its token); processes that share
            it and the Redis share the budgets.
        limits: The limits to pace by.
        key_prefix: Start of every key; keys are ``<prefix>:{<bot_id>}:...``.
    """

    def __init__(
        self,
        redis: Redis,
        bot_id: int,
        limits: TelegramLimits | None = None,
        *,
        key_prefix: str = DEFAULT_KEY_PREFIX,
    ) -> None:
        self.limits = limits or TelegramLimits()
        self._script = redis.register_script(_SCRIPT)
        self._prefix = f"{key_prefix}:{{{bot_id}}}"
        self._step = _micros(self.limits.bot_interval)
        self._paid_step = _micros(self.limits.paid_interval)
        self._chat_step = _micros(self.limits.chat_interval)
        self._window = _micros(self.limits.group_window)

    def chat_key(self, chat_id: ChatId) -> str:
        """The Redis key holding one chat's budget."""
        return f"{self._prefix}:chat:{_normalize(chat_id)}"

    def budget_keys(self, *, paid: bool = False) -> tuple[str, str]:
        """The Redis keys of the bot-wide (or paid) budget: its state hash and its bookings."""
        name = "paid" if paid else "bot"
        return f"{self._prefix}:{name}", f"{self._prefix}:{name}:booked"

    async def reserve(
        self,
        chat_id: ChatId | None,
        *,
        cost: int = 1,
        paid: bool = False,
        max_wait: float = 60.0,
        hold: float = 0.0,
        now_us: int | None = None,
    ) -> Turn:
        """Book the earliest turn both the bot's budget and the chat's budget allow.

        Args:
            chat_id: Target chat (``@username`` counts as a group); ``None`` for a request
                without one (an inline message edit), paced by the bot's budget only.
            cost: Messages the request puts into the chat (items of a media group).
            paid: Use the paid-broadcast budget instead of the bot-wide one.
            max_wait: Book only if the turn is at most this many seconds away.
            hold: Seconds Telegram asked to wait (a 429's ``retry_after``): the chat is held
                that long first; so is the whole budget if the request has no chat. If
                another chat is still held, the whole budget is held too, for the shorter
                of the two holds.
            now_us: A fixed clock in microseconds, for tests; by default Redis's ``TIME``.

        Returns:
            The turn: booked with the seconds to wait, or refused with the seconds it
            would have been.

        Raises:
            ValueError: If ``cost`` is below 1.
            redis.exceptions.RedisError: If Redis cannot be reached or refuses the script.
        """
        if cost < 1:
            msg = f"cost must be at least 1, got {cost}"
            raise ValueError(msg)
        kind = _NO_CHAT if chat_id is None else _kind(chat_id)
        keys = [*self.budget_keys(paid=paid)]
        if chat_id is not None:
            keys.append(self.chat_key(chat_id))
        args: list[int | str] = [
            now_us or 0,
            cost,
            self._paid_step if paid else self._step,
            kind,
            self._chat_step,
            self.limits.per_group_per_minute,
            self._window,
            _micros(max_wait),
            _micros(hold),
            "" if chat_id is None else _normalize(chat_id),
        ]
        granted, wait_us = await self._script(keys=keys, args=args)
        return Turn(granted=int(granted) == 1, wait=int(wait_us) / 1_000_000)

    async def hold(self, chat_id: ChatId | None, seconds: float, *, paid: bool = False) -> None:
        """Hold the chat (or the budget, see :meth:`reserve`) without booking a turn.

        Args:
            chat_id: The chat Telegram answered 429 for, or ``None`` to hold the budget.
            seconds: How long, usually the 429's ``retry_after``.
            paid: Hold the paid-broadcast budget instead of the bot-wide one.

        Raises:
            redis.exceptions.RedisError: If Redis cannot be reached.
        """
        await self.reserve(chat_id, paid=paid, max_wait=-1.0, hold=seconds)


def _micros(seconds: float) -> int:
    return math.ceil(seconds * 1_000_000) if seconds > 0 else math.floor(seconds * 1_000_000)


def _normalize(chat_id: ChatId) -> str:
    text = str(chat_id).strip()
    return text if _NUMERIC.fullmatch(text) else text.lower()


def _kind(chat_id: ChatId) -> int:
    text = str(chat_id).strip()
    if _NUMERIC.fullmatch(text):
        return _PRIVATE if int(text) > 0 else _GROUP
    return _GROUP  # "@channel" or "@supergroup": usernames of private chats are not accepted
