"""Handlers of the notifications feature: ``handler(payload, container)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

if TYPE_CHECKING:
    from example_bot.container import Container


async def send_notification(payload: dict[str, Any], container: Container) -> None:
    """Send the notification's ``text`` to ``chat_id``, with a button to ``url`` if given.

    The bot's flood control paces the send by Telegram's limits and sends it again after a
    short 429. Other Telegram errors propagate: the dispatcher retries a 429 longer than
    ``max_flood_wait`` after its ``retry_after`` and dead-letters a chat that blocked the bot.
    """
    markup = None
    if url := payload.get("url"):
        button = InlineKeyboardButton(text=payload.get("button") or "Open", url=url)
        markup = InlineKeyboardMarkup(inline_keyboard=[[button]])
    await container.bot().send_message(payload["chat_id"], payload["text"], reply_markup=markup)
