"""Which Bot API requests Telegram's flood limits apply to, for which chat, at what cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from aiogram.methods import TelegramMethod

from codex_bot.telegram.limiter import ChatId

_PACED_PREFIXES: Final = (
    "send",
    "copyMessage",
    "forwardMessage",
    "editMessage",
    "editEphemeralMessage",
)
_PACED_NAMES: Final = frozenset({"stopPoll", "stopMessageLiveLocation"})
_UNPACED_NAMES: Final = frozenset(
    {
        # A status shown for a few seconds, usually sent right before the message it
        # announces: pacing it would double that message's wait.
        "sendChatAction",
        # Drafts are previews streamed while a message is written; the final send is paced.
        "sendMessageDraft",
        "sendRichMessageDraft",
        # Answers a join request with a Mini App; it puts nothing into a chat.
        "sendChatJoinRequestWebApp",
    }
)
_MULTI_ITEM: Final = {
    "sendMediaGroup": "media",
    "copyMessages": "message_ids",
    "forwardMessages": "message_ids",
}


@dataclass(frozen=True, slots=True)
class PacedRequest:
    """What the flood limits need to know about one request.

    Attributes:
        chat_id: The chat it writes to, or ``None`` (an inline message edit).
        cost: Messages it puts into the chat: one per item of a media group or of a
            ``copyMessages`` / ``forwardMessages`` call, else one.
        paid: It carries ``allow_paid_broadcast=True``.
    """

    chat_id: ChatId | None
    cost: int
    paid: bool


def paced_request(method: TelegramMethod[Any]) -> PacedRequest | None:
    """Tell whether a request is paced and how.

    Paced: every ``send*`` method except ``sendChatAction``, the draft methods and
    ``sendChatJoinRequestWebApp``; ``copyMessage(s)``, ``forwardMessage(s)``,
    ``editMessage*``, ``editEphemeralMessage*``, ``stopPoll`` and ``stopMessageLiveLocation``.

    Args:
        method: The aiogram method about to be sent.

    Returns:
        The request's chat, cost and budget, or ``None`` if it is not paced.
    """
    name = method.__api_method__
    if name in _UNPACED_NAMES or not (name.startswith(_PACED_PREFIXES) or name in _PACED_NAMES):
        return None
    chat_id = getattr(method, "chat_id", None)
    if chat_id is None:  # sendGift names a user instead of a chat
        chat_id = getattr(method, "user_id", None)
    items = getattr(method, _MULTI_ITEM.get(name, ""), None)
    cost = len(items) if isinstance(items, list) and items else 1
    return PacedRequest(chat_id, cost, getattr(method, "allow_paid_broadcast", None) is True)
