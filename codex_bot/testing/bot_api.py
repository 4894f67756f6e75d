"""Local Telegram Bot API stand-in: a real aiohttp server that a real aiogram ``Bot`` talks to.

Tests and demos run against it without a token or internet access::

    async with TelegramBotAPIStandIn() as api:
        bot = Bot(token="42:TEST", session=api.session())
        await bot.send_message(1, "hi")
        assert api.sent[0].text == "hi"
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Self

from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from codex_bot.telegram.limits import TelegramLimits
from codex_bot.testing import wire
from codex_bot.testing.flood import TelegramFloodControl
from codex_bot.testing.wire import ChatId, Params, RejectedCall, SentMessage

__all__ = ["RejectedCall", "SentMessage", "TelegramBotAPIStandIn"]

logger = logging.getLogger(__name__)

_Handler = Callable[[str, Params], Awaitable[web.Response]]

_TOKEN_RE = re.compile(r"\d+:.+")
_TRUE_METHODS = ["deleteWebhook", "setWebhook", "answerCallbackQuery", "sendChatAction"]
_TRUE_METHODS += ["setMyCommands", "deleteMessage", "close", "logOut"]


@dataclass
class _Fault:
    error_code: int
    description: str
    remaining: int | None  # None means "for ever"
    retry_after: int | None = None
    migrate_to_chat_id: int | None = None


class TelegramBotAPIStandIn:
    """Local stand-in for the Telegram Bot API, served over HTTP on 127.0.0.1.

    Answers the methods a notification bot uses, records what was sent, and can inject the
    errors Telegram returns (429, 403, 400, 5xx, a group migrated to a supergroup) for chosen
    chats. Faults apply to the message methods (``sendMessage``, ``sendPhoto``,
    ``sendMediaGroup``, ``copyMessage``, ``forwardMessage``, ``editMessageText``), one fault
    per chat (the latest call wins).

    Args:
        latency: Seconds added to every answer of a ``send``/``copy``/``forward`` method, to
            imitate Telegram.
        limits: Enforce these flood limits per bot token, as Telegram does: a message that
            does not fit is answered 429 with ``retry_after`` = whole seconds until it
            would (see :attr:`flood_answers`). ``margin`` is ignored. ``None``: no limits.
    """

    def __init__(self, *, latency: float = 0.0, limits: TelegramLimits | None = None) -> None:
        self._latency = latency
        self._limits = limits
        self._flood = TelegramFloodControl(limits) if limits else None
        self._flood_answers = 0
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._closing = False
        self._sent: list[SentMessage] = []
        self._rejected: list[RejectedCall] = []
        self._calls: dict[str, int] = {}
        self._faults: dict[ChatId, _Fault] = {}
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._next_message_id = 1
        self._changed = asyncio.Condition()
        self._update_pushed = asyncio.Event()
        handlers: dict[str, _Handler] = dict.fromkeys(_TRUE_METHODS, self._true)
        handlers |= {
            "getMe": self._get_me,
            "getUpdates": self._get_updates,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendPhoto": self._send_photo,
            "sendMediaGroup": self._send_media_group,
            "copyMessage": self._copy_message,
            "forwardMessage": self._forward_message,
            "editMessageText": self._edit_message_text,
        }
        # Telegram method names are case-insensitive.
        self._methods = {name.lower(): (name, handler) for name, handler in handlers.items()}

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start serving on a free port of 127.0.0.1; does nothing if already started."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # access_log=None: the access log would write the token, which is part of the path.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=2)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
        except BaseException:
            await runner.cleanup()
            raise
        host, port = runner.addresses[0][:2]
        self._runner, self._closing = runner, False
        self._base_url = f"http://{host}:{port}"
        logger.info("Bot API stand-in listening on %s", self._base_url)

    async def stop(self) -> None:
        """Stop serving, releasing pending long polls first; safe to call more than once."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing = True
        self._wake_pollers()
        await runner.cleanup()
        self._base_url = None
        logger.info("Bot API stand-in stopped")

    @property
    def base_url(self) -> str:
        """Root URL of the running server, e.g. ``http://127.0.0.1:40123``.

        Raises:
            RuntimeError: If the server is not running.
        """
        if self._base_url is None:
            msg = "TelegramBotAPIStandIn is not started; call start() or use 'async with'"
            raise RuntimeError(msg)
        return self._base_url

    def api_server(self) -> TelegramAPIServer:
        """Return aiogram's API server config pointing at this stand-in.

        Raises:
            RuntimeError: If the server is not running.
        """
        return TelegramAPIServer.from_base(self.base_url)

    def session(self) -> AiohttpSession:
        """Return a new aiogram session for ``Bot(token=..., session=...)``; the caller closes it.

        Raises:
            RuntimeError: If the server is not running.
        """
        return AiohttpSession(api=self.api_server())

    @property
    def sent(self) -> list[SentMessage]:
        """Recorded sent and edited messages, in arrival order (a copy)."""
        return list(self._sent)

    @property
    def rejected(self) -> list[RejectedCall]:
        """Calls answered with an injected error, in arrival order (a copy)."""
        return list(self._rejected)

    @property
    def calls(self) -> dict[str, int]:
        """Number of requests per method name, rejected and unknown ones included (a copy)."""
        return dict(self._calls)

    @property
    def flood_answers(self) -> int:
        """How many calls were answered 429 Too Many Requests (injected ones included)."""
        return self._flood_answers

    def sent_to(self, chat_id: ChatId) -> list[SentMessage]:
        """Return the recorded messages for one chat, in arrival order.

        Args:
            chat_id: Chat id or ``@username`` as the bot passed it.
        """
        return [message for message in self._sent if message.chat_id == chat_id]

    def push_update(self, update: Mapping[str, Any]) -> int:
        """Queue an update for ``getUpdates``, waking pending long polls.

        Args:
            update: Update object as Telegram sends it; ``update_id`` is assigned if missing.

        Returns:
            The update's ``update_id``.
        """
        body = dict(update)
        update_id = int(body.setdefault("update_id", self._next_update_id))
        self._next_update_id = max(self._next_update_id, update_id + 1)
        self._updates.append(body)
        self._wake_pollers()
        return update_id

    def fail_with_retry_after(self, chat_id: ChatId, retry_after: int, times: int = 1) -> None:
        """Answer the chat's next ``times`` messages with 429 Too Many Requests.

        Args:
            chat_id: Chat to fail.
            retry_after: Seconds Telegram tells the bot to wait.
            times: How many calls fail before the chat succeeds again.
        """
        description = f"Too Many Requests: retry after {retry_after}"
        self._faults[chat_id] = _Fault(429, description, _positive(times), retry_after)

    def block_chat(self, chat_id: ChatId) -> None:
        """Answer every message to the chat with 403, as when the user blocked the bot."""
        self._faults[chat_id] = _Fault(403, "Forbidden: bot was blocked by the user", None)

    def missing_chat(self, chat_id: ChatId) -> None:
        """Answer every message to the chat with 400 Bad Request: chat not found."""
        self._faults[chat_id] = _Fault(400, "Bad Request: chat not found", None)

    def migrate_chat(self, chat_id: ChatId, new_chat_id: int) -> None:
        """Answer every message to the group with 400 and ``migrate_to_chat_id``.

        Args:
            chat_id: The group that became a supergroup.
            new_chat_id: The supergroup's id, which Telegram tells the bot to use instead.
        """
        description = "Bad Request: group chat was upgraded to a supergroup chat"
        self._faults[chat_id] = _Fault(400, description, None, migrate_to_chat_id=new_chat_id)

    def fail_with_server_error(self, chat_id: ChatId, times: int = 1) -> None:
        """Answer the chat's next ``times`` messages with 502 Bad Gateway.

        Args:
            chat_id: Chat to fail.
            times: How many calls fail before the chat succeeds again.
        """
        self._faults[chat_id] = _Fault(502, "Bad Gateway", _positive(times))

    def reset(self) -> None:
        """Forget recorded messages, rejections, call counts, queued updates, faults and floods."""
        for records in (self._sent, self._rejected, self._updates):
            records.clear()
        self._calls.clear()
        self._faults.clear()
        self._flood_answers = 0
        self._flood = TelegramFloodControl(self._limits) if self._limits else None

    async def wait_for_messages(
        self,
        n: int,
        timeout: float = 10.0,  # noqa: ASYNC109 - the timeout is part of the requested API
    ) -> list[SentMessage]:
        """Wait until at least ``n`` messages are recorded.

        Args:
            n: Number of recorded messages to wait for.
            timeout: Seconds to wait.

        Returns:
            All recorded messages.

        Raises:
            TimeoutError: If fewer than ``n`` messages arrived in time.
        """
        await self._wait_for(lambda: len(self._sent), n, timeout, "sent messages")
        return self.sent

    async def wait_for_calls(
        self,
        method: str,
        n: int = 1,
        timeout: float = 10.0,  # noqa: ASYNC109 - mirrors wait_for_messages
    ) -> None:
        """Wait until ``method`` has been requested at least ``n`` times.

        Args:
            method: Method name as in :attr:`calls`, e.g. ``"getUpdates"``.
            n: Number of requests to wait for.
            timeout: Seconds to wait.

        Raises:
            TimeoutError: If fewer than ``n`` requests arrived in time.
        """
        await self._wait_for(lambda: self._calls.get(method, 0), n, timeout, f"{method} calls")

    async def _wait_for(self, count: Callable[[], int], n: int, seconds: float, what: str) -> None:
        try:
            async with asyncio.timeout(seconds), self._changed:
                await self._changed.wait_for(lambda: count() >= n)
        except TimeoutError:
            msg = f"timed out after {seconds}s waiting for {n} {what}; only {count()} arrived"
            raise TimeoutError(msg) from None

    def _wake_pollers(self) -> None:
        # A fresh event per pulse: every waiter holding the old one wakes, nobody clears early.
        self._update_pushed.set()
        self._update_pushed = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        token, name = request.match_info["token"], request.match_info["method"]
        canonical, handler = self._methods.get(name.lower(), (name, None))
        async with self._changed:
            self._calls[canonical] = self._calls.get(canonical, 0) + 1
            self._changed.notify_all()
        if not _TOKEN_RE.fullmatch(token):
            return wire.error(401, "Unauthorized")
        if handler is None:
            logger.debug("Bot API stand-in: unknown method %s", canonical)
            return wire.error(404, "Not Found: method not found")
        try:
            response = await handler(token, await wire.read_params(request))
        except ValueError as exc:
            logger.debug("Bot API stand-in: bad %s parameters: %s", canonical, exc)
            return wire.error(400, "Bad Request: can't parse parameters")
        logger.debug("Bot API stand-in: %s -> %s", canonical, response.status)
        return response

    async def _true(self, _token: str, _params: Params) -> web.Response:
        return wire.ok(True)

    async def _get_me(self, token: str, _params: Params) -> web.Response:
        return wire.ok(wire.bot_user(token))

    async def _get_webhook_info(self, _token: str, _params: Params) -> web.Response:
        pending = len(self._updates)
        return wire.ok(
            {"url": "", "has_custom_certificate": False, "pending_update_count": pending}
        )

    async def _get_updates(self, _token: str, params: Params) -> web.Response:
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        if offset > 0:  # confirms every update below offset, as Telegram does
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
        timeout = float(params.get("timeout") or 0)
        if not self._updates and timeout > 0 and not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._update_pushed.wait()
        return wire.ok(self._updates[:limit])

    async def _send_message(self, token: str, params: Params) -> web.Response:
        await self._pause()
        text = str(params.get("text") or "")
        if not text:
            return wire.error(400, "Bad Request: message text is empty")
        return wire.one(await self._deliver("sendMessage", token, params, [text]), token)

    async def _send_photo(self, token: str, params: Params) -> web.Response:
        await self._pause()
        caption = str(params.get("caption") or "")
        return wire.one(await self._deliver("sendPhoto", token, params, [caption]), token)

    async def _send_media_group(self, token: str, params: Params) -> web.Response:
        await self._pause()
        media = params.get("media")
        media = json.loads(media) if isinstance(media, str) else media
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            return wire.error(400, "Bad Request: a media group must have 2 to 10 items")
        captions = [str(item.get("caption") or "") for item in media if isinstance(item, dict)]
        sent = await self._deliver("sendMediaGroup", token, params, captions)
        if isinstance(sent, web.Response):
            return sent
        return wire.ok([wire.message_json(message, token) for message in sent])

    async def _copy_message(self, token: str, params: Params) -> web.Response:
        await self._pause()
        if not params.get("from_chat_id") or not params.get("message_id"):
            return wire.error(400, "Bad Request: message to copy not found")
        caption = str(params.get("caption") or "")
        sent = await self._deliver("copyMessage", token, params, [caption])
        if isinstance(sent, web.Response):
            return sent
        return wire.ok({"message_id": sent[0].message_id})

    async def _forward_message(self, token: str, params: Params) -> web.Response:
        await self._pause()
        if not params.get("from_chat_id") or not params.get("message_id"):
            return wire.error(400, "Bad Request: message to forward not found")
        return wire.one(await self._deliver("forwardMessage", token, params, [""]), token)

    async def _edit_message_text(self, token: str, params: Params) -> web.Response:
        if params.get("inline_message_id"):
            return wire.ok(True)
        if not params.get("message_id"):
            return wire.error(400, "Bad Request: message identifier is not specified")
        text = str(params.get("text") or "")
        if not text:
            return wire.error(400, "Bad Request: message text is empty")
        message_id = int(params["message_id"])
        sent = await self._deliver("editMessageText", token, params, [text], message_id)
        return wire.one(sent, token)

    async def _pause(self) -> None:
        if self._latency > 0:
            await asyncio.sleep(self._latency)

    async def _deliver(
        self,
        method: str,
        token: str,
        params: Params,
        texts: list[str],
        message_id: int | None = None,
    ) -> list[SentMessage] | web.Response:
        """Record one message per text, or answer the flood limit's or the chat's fault."""
        chat_id = wire.chat_id(params.get("chat_id"))
        if chat_id is None:
            return wire.error(400, "Bad Request: chat_id is empty")
        paid = str(params.get("allow_paid_broadcast")).lower() == "true"
        if self._flood and (wait := self._flood.admit(token, chat_id, len(texts), paid=paid)):
            flood = _Fault(429, f"Too Many Requests: retry after {wait}", 1, retry_after=wait)
            return self._reject(chat_id, method, flood)
        if fault := self._take_fault(chat_id):
            return self._reject(chat_id, method, fault)
        markup, parse_mode = wire.json_object(params.get("reply_markup")), params.get("parse_mode")
        parse_mode = str(parse_mode) if parse_mode else None
        sent = []
        for text in texts:
            number = message_id or self._next_message_id
            self._next_message_id += message_id is None
            sent.append(SentMessage(chat_id, text, markup, parse_mode, number, method, time.time()))
        async with self._changed:
            self._sent.extend(sent)
            self._changed.notify_all()
        return sent

    def _reject(self, chat_id: ChatId, method: str, fault: _Fault) -> web.Response:
        rejected = RejectedCall(chat_id, fault.error_code, fault.description, method, time.time())
        self._rejected.append(rejected)
        self._flood_answers += fault.error_code == 429
        parameters: dict[str, Any] = {}
        if fault.retry_after:
            parameters["retry_after"] = fault.retry_after
        if fault.migrate_to_chat_id:
            parameters["migrate_to_chat_id"] = fault.migrate_to_chat_id
        return wire.error(fault.error_code, fault.description, parameters)

    def _take_fault(self, chat_id: ChatId) -> _Fault | None:
        fault = self._faults.get(chat_id)
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self._faults[chat_id]
        return fault


def _positive(times: int) -> int:
    if times < 1:
        msg = f"times must be at least 1, got {times}"
        raise ValueError(msg)
    return times
