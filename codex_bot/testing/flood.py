"""Telegram's side of the flood limits, for the Bot API stand-in: sliding windows over arrivals.

Per bot token: at most ``per_second`` messages in any second (``paid_per_second`` for
requests with ``allow_paid_broadcast``), at most ``per_chat_per_second`` to one chat in any
second, and at most ``per_group_per_minute`` to one group in any minute. A media group
counts one message per item. The limits are applied as they are: ``margin`` is the
client's business.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from codex_bot.telegram.limits import TelegramLimits

ChatId = int | str


class _Window:
    """Arrivals in a sliding window of ``span`` seconds, at most ``cap`` messages."""

    def __init__(self, cap: int, span: float) -> None:
        self.cap, self.span = cap, span
        self._arrivals: deque[tuple[float, int]] = deque()
        self._total = 0

    def wait(self, now: float, cost: int) -> float:
        """Seconds until ``cost`` more messages fit (an empty window takes any cost)."""
        while self._arrivals and self._arrivals[0][0] <= now - self.span:
            self._total -= self._arrivals.popleft()[1]
        excess = self._total + cost - self.cap
        if excess <= 0 or not self._arrivals:
            return 0.0
        left = self._total
        for at, count in self._arrivals:
            excess, left = excess - count, left - count
            if excess <= 0 or left == 0:
                return at + self.span - now
        return 0.0  # unreachable: the loop ends with left == 0

    def add(self, now: float, cost: int) -> None:
        self._arrivals.append((now, cost))
        self._total += cost

    @property
    def empty(self) -> bool:
        return not self._arrivals


class TelegramFloodControl:
    """Decides, as Telegram does, whether a message may go now or gets a 429.

    Args:
        limits: The limits to enforce (``margin`` is ignored).
        clock: Seconds, monotonic; the arrival time of a request.
    """

    def __init__(self, limits: TelegramLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._windows: dict[tuple[str, str, ChatId], _Window] = {}

    def admit(self, token: str, chat_id: ChatId, cost: int = 1, *, paid: bool = False) -> int:
        """Count the message if every window lets it through.

        Args:
            token: The bot's token: limits are per bot.
            chat_id: Target chat; negative ids and ``@username`` are groups.
            cost: Messages the request holds (items of a media group).
            paid: The request carries ``allow_paid_broadcast``.

        Returns:
            0 if the message was admitted, else the ``retry_after`` to answer: whole
            seconds until every window has room (at least 1).
        """
        now = self._clock()
        windows = self._windows_for(token, chat_id, paid=paid)
        wait = max(window.wait(now, cost) for window in windows)
        if wait > 0:
            return max(1, math.ceil(wait))
        for window in windows:
            window.add(now, cost)
        if len(self._windows) > 10_000:  # a long broadcast: forget idle chats
            self._windows = {k: w for k, w in self._windows.items() if not w.empty}
        return 0

    def _windows_for(self, token: str, chat_id: ChatId, *, paid: bool) -> list[_Window]:
        limits = self.limits
        budget, rate = ("paid", limits.paid_per_second) if paid else ("bot", limits.per_second)
        windows = [
            self._window((budget, token, ""), *_per_second(rate)),
            self._window(("chat", token, chat_id), *_per_second(limits.per_chat_per_second)),
        ]
        if isinstance(chat_id, str) or chat_id < 0:
            windows.append(self._window(("group", token, chat_id), limits.per_group_per_minute, 60))
        return windows

    def _window(self, key: tuple[str, str, ChatId], cap: int, span: float) -> _Window:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(cap, span)
        return window


def _per_second(rate: float) -> tuple[int, float]:
    """A rate as a window: ``rate`` messages a second, or one per ``1 / rate`` seconds below 1."""
    cap = max(1, math.floor(rate + 1e-9))
    return cap, cap / rate
