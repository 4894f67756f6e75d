"""Which aiogram requests are paced, for which chat, at what cost; the package's surface."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiogram import methods
from aiogram.types import InputMediaPhoto

import codex_bot.telegram
from codex_bot.telegram import PacedRequest, TelegramLimits, paced_request

ALBUM = [InputMediaPhoto(media=f"file-{i}") for i in range(4)]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        (methods.SendMessage(chat_id=7, text="hi"), PacedRequest(7, 1, False)),
        (methods.SendMessage(chat_id="@news", text="hi"), PacedRequest("@news", 1, False)),
        (
            methods.SendMessage(chat_id=7, text="hi", allow_paid_broadcast=True),
            PacedRequest(7, 1, True),
        ),
        (methods.SendPhoto(chat_id=-5, photo="file"), PacedRequest(-5, 1, False)),
        (methods.SendMediaGroup(chat_id=7, media=ALBUM), PacedRequest(7, 4, False)),
        (
            methods.CopyMessages(chat_id=7, from_chat_id=8, message_ids=[1, 2, 3]),
            PacedRequest(7, 3, False),
        ),
        (
            methods.ForwardMessage(chat_id=7, from_chat_id=8, message_id=1),
            PacedRequest(7, 1, False),
        ),
        (
            methods.EditMessageText(chat_id=7, message_id=1, text="v2"),
            PacedRequest(7, 1, False),
        ),
        (
            methods.EditMessageText(inline_message_id="abc", text="v2"),
            PacedRequest(None, 1, False),
        ),
        (methods.StopPoll(chat_id=7, message_id=1), PacedRequest(7, 1, False)),
        (methods.SendGift(user_id=9, gift_id="g"), PacedRequest(9, 1, False)),
        (methods.SendChatAction(chat_id=7, action="typing"), None),
        (methods.GetMe(), None),
        (methods.GetUpdates(), None),
        (methods.AnswerCallbackQuery(callback_query_id="q"), None),
        (methods.SetWebhook(url="https://example.invalid"), None),
        (methods.DeleteMessage(chat_id=7, message_id=1), None),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, methods.TelegramMethod) else "",
)
def test_paced_requests(method: methods.TelegramMethod[Any], expected: PacedRequest | None) -> None:
    assert paced_request(method) == expected


def test_the_defaults_are_telegrams_limits_with_a_small_margin() -> None:
    limits = TelegramLimits()

    assert (limits.per_second, limits.per_chat_per_second) == (30, 1)
    assert (limits.per_group_per_minute, limits.paid_per_second) == (20, 1000)
    assert 1 / (limits.bot_interval * limits.per_second) >= 0.95  # a broadcast's share


@pytest.mark.parametrize(
    "bad",
    [
        {"per_second": 0},
        {"per_chat_per_second": -1},
        {"paid_per_second": float("inf")},
        {"per_group_per_minute": 0},
        {"margin": -0.1},
        {"margin": 0.9},
    ],
)
def test_limits_refuse_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        TelegramLimits(**bad)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"per_second": "30"}, "per_second must be a number, got '30'"),
        ({"per_second": True}, "per_second must be a number, got True"),
        ({"margin": "0.03"}, "margin must be a number, got '0.03'"),
        ({"per_group_per_minute": 2.5}, "per_group_per_minute must be an int, got 2.5"),
    ],
)
def test_limits_name_a_value_that_is_no_number(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        TelegramLimits(**bad)


def test_the_public_names() -> None:
    assert codex_bot.telegram.__all__ == [
        "FloodLimiter",
        "PacedRequest",
        "RateLimitMiddleware",
        "RateLimitStats",
        "TelegramLimits",
        "Turn",
        "paced_request",
    ]
