"""What the Bot API stand-in reads and writes.

Request parameters in, Telegram's JSON objects and error bodies out, and the records of
what was sent or rejected.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ChatId = int | str
Params = dict[str, Any]

_PHOTO_METHODS = frozenset({"sendPhoto", "sendMediaGroup"})
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


@dataclass(frozen=True)
class SentMessage:
    """A message the bot sent or edited.

    ``method`` is ``sendMessage``, ``sendPhoto``, ``sendMediaGroup`` (one record per item),
    ``copyMessage``, ``forwardMessage`` or ``editMessageText``; ``text`` is the text or the
    caption (empty for a copy or forward without one).
    """

    chat_id: ChatId
    text: str
    reply_markup: dict[str, Any] | None
    parse_mode: str | None
    message_id: int
    method: str
    at: float


@dataclass(frozen=True)
class RejectedCall:
    """A call answered with an injected error, or with 429 by the flood limits."""

    chat_id: ChatId
    error_code: int
    description: str
    method: str
    at: float


async def read_params(request: web.Request) -> Params:
    params: Params = dict(request.query)
    if request.content_type == "application/json":
        raw = await request.text()
        body = json.loads(raw) if raw.strip() else {}
        if not isinstance(body, dict):
            msg = "JSON body must be an object"
            raise ValueError(msg)  # answered as 400 by the caller
        params.update(body)
    elif request.content_type in _FORM_TYPES:
        form = await request.post()
        params.update((key, value) for key, value in form.items() if isinstance(value, str))
    return params


def chat_id(value: Any) -> ChatId | None:
    if value is None or value == "":
        return None
    text = str(value)
    return int(text) if text.lstrip("-").isdigit() else text


def json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str):  # form bodies carry nested objects as JSON strings
        value = json.loads(value) if value else None
    return value if isinstance(value, dict) else None


def bot_user(token: str) -> dict[str, Any]:
    bot_id = int(token.split(":", 1)[0])
    return {"id": bot_id, "is_bot": True, "first_name": "Stand-in", "username": "standin_bot"}


def chat_json(chat_id: ChatId) -> dict[str, Any]:
    if isinstance(chat_id, str):  # "@channel": Telegram answers with a numeric id
        numeric = -1_000_000_000_000 - zlib.crc32(chat_id.encode())
        return {"id": numeric, "type": "channel", "username": chat_id.lstrip("@")}
    return {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}


def one(sent: list[SentMessage] | web.Response, token: str) -> web.Response:
    return sent if isinstance(sent, web.Response) else ok(message_json(sent[0], token))


def message_json(message: SentMessage, token: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "message_id": message.message_id,
        "date": int(message.at),
        "chat": chat_json(message.chat_id),
        "from": bot_user(token),
    }
    if message.method in _PHOTO_METHODS:
        body["photo"] = [{"file_id": "AgAD", "file_unique_id": "AQAD", "width": 1, "height": 1}]
        if message.text:
            body["caption"] = message.text
    elif message.text:
        body["text"] = message.text
    # Messages only echo inline keyboards; aiogram would reject any other markup here.
    if message.reply_markup and "inline_keyboard" in message.reply_markup:
        body["reply_markup"] = message.reply_markup
    if message.method == "editMessageText":
        body["edit_date"] = int(message.at)
    return body


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)
