"""Telegram's side of the flood limits in the stand-in, on a clock the test moves."""

from __future__ import annotations

from codex_bot.telegram import TelegramLimits
from codex_bot.testing.flood import TelegramFloodControl


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def control(**limits: float) -> tuple[TelegramFloodControl, Clock]:
    clock = Clock()
    return TelegramFloodControl(TelegramLimits(**limits), clock), clock  # type: ignore[arg-type]


def test_the_bot_wide_window_slides_over_arrivals() -> None:
    flood, clock = control(per_second=3)
    assert [flood.admit("t", chat) for chat in (1, 2, 3)] == [0, 0, 0]
    assert flood.admit("t", 4) == 1
    clock.now += 0.999
    assert flood.admit("t", 4) == 1  # the first is still inside (t - 1, t]
    clock.now += 0.001
    assert flood.admit("t", 4) == 0


def test_retry_after_is_the_whole_seconds_until_the_window_has_room() -> None:
    flood, clock = control(per_chat_per_second=100, per_group_per_minute=2)
    flood.admit("t", -5)
    clock.now += 10
    flood.admit("t", -5)
    clock.now += 5
    assert flood.admit("t", -5) == 45  # the first leaves the minute at 60 s


def test_a_chat_gets_one_message_a_second_and_a_slower_rate_widens_the_window() -> None:
    flood, clock = control(per_chat_per_second=0.5)
    assert flood.admit("t", 7) == 0
    clock.now += 1.5
    assert flood.admit("t", 7) == 1  # one message per 2 s
    clock.now += 0.5
    assert flood.admit("t", 7) == 0


def test_a_media_group_counts_each_item_and_fits_an_empty_window() -> None:
    flood, clock = control(per_second=5, per_chat_per_second=1)
    assert flood.admit("t", 7, cost=10) == 0  # larger than the chat's window, alone in it
    assert flood.admit("t", 8) == 1  # the 10 items fill the bot-wide second
    clock.now += 1
    assert flood.admit("t", 8, cost=4) == 0
    assert flood.admit("t", 9, cost=2) == 1


def test_paid_broadcasts_and_other_bots_have_their_own_windows() -> None:
    flood, _ = control(per_second=1, paid_per_second=2)
    assert flood.admit("bot-a", 1) == 0
    assert flood.admit("bot-a", 2) == 1
    assert flood.admit("bot-a", 2, paid=True) == 0
    assert flood.admit("bot-a", 3, paid=True) == 0
    assert flood.admit("bot-a", 4, paid=True) == 1
    assert flood.admit("bot-b", 2) == 0


def test_rejected_messages_do_not_count() -> None:
    flood, clock = control(per_second=1)
    flood.admit("t", 1)
    for _ in range(5):
        flood.admit("t", 2)
    clock.now += 1
    assert flood.admit("t", 2) == 0
