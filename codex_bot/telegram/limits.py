"""``TelegramLimits``: the flood limits Telegram applies to one bot, and the pacing they imply."""

from __future__ import annotations

import math
from dataclasses import dataclass

_GROUP_WINDOW = 60.0
"""Telegram counts group messages per minute."""


@dataclass(frozen=True, slots=True)
class TelegramLimits:
    """Telegram's flood limits for one bot token (the defaults are Telegram's published ones).

    Args:
        per_second: Messages per second across all chats (broadcasting limit).
        per_chat_per_second: Messages per second to one chat; consecutive messages to a
            chat are spaced ``1 / per_chat_per_second`` apart (groups included).
        per_group_per_minute: Messages to one group, supergroup or channel in any
            60-second window.
        paid_per_second: Messages per second sent with ``allow_paid_broadcast=True``;
            they use this budget instead of ``per_second``.
        margin: Share by which every interval and window is stretched, so that jitter
            between the pacing and Telegram's arrival times does not cross a limit. The
            default 0.03 keeps a broadcast at 97% of ``per_second``.

    Raises:
        TypeError: If a limit or ``margin`` is not a number (``per_group_per_minute``: an int).
        ValueError: If a limit is not positive or ``margin`` is outside ``[0, 0.5]``.
    """

    per_second: float = 30
    per_chat_per_second: float = 1
    per_group_per_minute: int = 20
    paid_per_second: float = 1000
    margin: float = 0.03

    def __post_init__(self) -> None:
        for name in ("per_second", "per_chat_per_second", "paid_per_second", "margin"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool):
                msg = f"{name} must be a number, got {value!r}"
                raise TypeError(msg)
        rates = (self.per_second, self.per_chat_per_second, self.paid_per_second)
        if not all(math.isfinite(rate) and rate > 0 for rate in rates):
            msg = f"rates must be positive and finite: {self}"
            raise ValueError(msg)
        group = self.per_group_per_minute
        if not isinstance(group, int) or isinstance(group, bool):
            msg = f"per_group_per_minute must be an int, got {group!r}"
            raise TypeError(msg)
        if group < 1:
            msg = f"per_group_per_minute must be a positive int, got {self.per_group_per_minute!r}"
            raise ValueError(msg)
        if not 0 <= self.margin <= 0.5:
            msg = f"margin must be between 0 and 0.5, got {self.margin}"
            raise ValueError(msg)

    @property
    def bot_interval(self) -> float:
        """Seconds between two messages under the bot-wide budget, margin included."""
        return (1 + self.margin) / self.per_second

    @property
    def paid_interval(self) -> float:
        """Seconds between two paid-broadcast messages, margin included."""
        return (1 + self.margin) / self.paid_per_second

    @property
    def chat_interval(self) -> float:
        """Seconds between two messages to one chat, margin included."""
        return (1 + self.margin) / self.per_chat_per_second

    @property
    def group_window(self) -> float:
        """The 60-second group window, margin included."""
        return _GROUP_WINDOW * (1 + self.margin)
