"""Tests for the local Telegram Bot API stand-in, driven by a real aiogram Bot over HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.filters import CommandStart
from aiogram.methods import TelegramMethod
from aiogram.types import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaPhoto,
    Message,
    MessageId,
)

from codex_bot.telegram import TelegramLimits
from codex_bot.testing.bot_api import SentMessage, TelegramBotAPIStandIn
from tests._helpers import command_update

TOKEN = "42:TEST"


@pytest.fixture
async def bot(standin: TelegramBotAPIStandIn) -> AsyncIterator[Bot]:
    bot = Bot(token=TOKEN, session=standin.session())
    yield bot
    await bot.session.close()


class DoesNotExist(TelegramMethod[bool]):
    __returning__ = bool
    __api_method__ = "doesNotExist"


async def test_get_me_answers_with_the_token_bot_id(bot: Bot) -> None:
    me = await bot.get_me()

    assert me.id == 42
    assert me.is_bot
    assert me.username


async def test_send_message_records_text_parse_mode_and_inline_keyboard(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    markup = InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text="Open", callback_data="open:1")]]
    )

    message = await bot.send_message(
        100, "<b>Deploy finished</b>", parse_mode="HTML", reply_markup=markup
    )

    [recorded] = standin.sent
    assert recorded.chat_id == 100
    assert recorded.text == "<b>Deploy finished</b>"
    assert recorded.parse_mode == "HTML"
    assert recorded.method == "sendMessage"
    assert recorded.reply_markup == {
        "inline_keyboard": [[{"text": "Open", "callback_data": "open:1"}]]
    }
    assert message.message_id == recorded.message_id
    assert message.chat.id == 100
    assert message.reply_markup is not None
    assert message.reply_markup.inline_keyboard[0][0].callback_data == "open:1"
    assert standin.sent_to(100) == [recorded]
    assert standin.sent_to(101) == []
    assert standin.calls["sendMessage"] == 1


async def test_other_notification_methods_answer_as_telegram(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    sent = await bot.send_message("@news", "v1")
    edited = await bot.edit_message_text("v2", chat_id="@news", message_id=sent.message_id)

    assert isinstance(edited, Message)
    assert edited.text == "v2"
    assert [(m.method, m.text, m.message_id) for m in standin.sent_to("@news")] == [
        ("sendMessage", "v1", sent.message_id),
        ("editMessageText", "v2", sent.message_id),
    ]
    assert await bot.answer_callback_query("cb-1", text="done")
    assert await bot.send_chat_action(100, "typing")
    assert await bot.delete_message(100, sent.message_id)
    assert await bot.delete_webhook(drop_pending_updates=True)
    assert (await bot.get_webhook_info()).url == ""


async def test_retry_after_raises_telegram_retry_after_then_succeeds(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    standin.fail_with_retry_after(100, retry_after=7, times=2)

    for _ in range(2):
        with pytest.raises(TelegramRetryAfter) as caught:
            await bot.send_message(100, "hello")
        assert caught.value.retry_after == 7
        assert "Too Many Requests: retry after 7" in caught.value.message
    await bot.send_message(100, "hello")

    assert [m.text for m in standin.sent] == ["hello"]
    assert [(r.chat_id, r.error_code) for r in standin.rejected] == [(100, 429), (100, 429)]
    assert standin.calls["sendMessage"] == 3


async def test_blocked_chat_raises_forbidden_every_time(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    standin.block_chat(100)

    for _ in range(2):
        with pytest.raises(TelegramForbiddenError) as caught:
            await bot.send_message(100, "hello")
        assert caught.value.message == "Forbidden: bot was blocked by the user"
    await bot.send_message(200, "other chats still work")

    assert [m.chat_id for m in standin.sent] == [200]
    assert standin.rejected[0].description == "Forbidden: bot was blocked by the user"


async def test_missing_chat_raises_bad_request(bot: Bot, standin: TelegramBotAPIStandIn) -> None:
    standin.missing_chat(-100123)

    with pytest.raises(TelegramBadRequest, match="chat not found") as caught:
        await bot.send_message(-100123, "hello")

    assert caught.value.message == "Bad Request: chat not found"
    assert standin.sent == []
    assert [(r.chat_id, r.error_code) for r in standin.rejected] == [(-100123, 400)]


async def test_server_error_raises_telegram_server_error_then_succeeds(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    standin.fail_with_server_error(100)

    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(100, "hello")
    await bot.send_message(100, "hello")

    assert len(standin.sent) == 1
    assert standin.rejected[0].error_code == 502


async def test_get_updates_long_poll_returns_update_pushed_while_waiting(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    started = time.monotonic()
    poll = asyncio.create_task(bot.get_updates(timeout=20))
    await standin.wait_for_calls("getUpdates")

    update_id = standin.push_update(command_update(7, "/start"))
    updates = await poll

    assert time.monotonic() - started < 10
    assert [u.update_id for u in updates] == [update_id]
    assert updates[0].message is not None
    assert updates[0].message.text == "/start"
    # The offset confirms the update, as on Telegram.
    assert await bot.get_updates(offset=update_id + 1) == []


async def test_get_updates_long_poll_gives_up_after_timeout(bot: Bot) -> None:
    started = time.monotonic()

    assert await bot.get_updates(timeout=1) == []
    assert time.monotonic() - started >= 0.9


async def test_stop_releases_pending_long_poll() -> None:
    standin = TelegramBotAPIStandIn()
    await standin.start()
    bot = Bot(token=TOKEN, session=standin.session())
    try:
        poll = asyncio.create_task(bot.get_updates(timeout=30))
        await standin.wait_for_calls("getUpdates")

        await asyncio.wait_for(standin.stop(), timeout=5)
        await standin.stop()  # idempotent

        assert await poll == []
    finally:
        await bot.session.close()
    with pytest.raises(RuntimeError, match="not started"):
        _ = standin.base_url


async def test_wait_for_messages_returns_once_enough_arrived(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    waiter = asyncio.create_task(standin.wait_for_messages(2, timeout=5))
    await bot.send_message(1, "one")
    await bot.send_message(2, "two")

    messages = await waiter

    assert [m.text for m in messages] == ["one", "two"]
    assert all(isinstance(m, SentMessage) for m in messages)


async def test_wait_for_messages_timeout_says_how_many_arrived(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    await bot.send_message(1, "only one")

    with pytest.raises(TimeoutError, match=r"waiting for 3 sent messages; only 1 arrived"):
        await standin.wait_for_messages(3, timeout=0.05)


async def test_unknown_method_answers_404_not_found(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    with pytest.raises(TelegramNotFound, match="method not found"):
        await bot(DoesNotExist())

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{standin.base_url}/bot{TOKEN}/doesNotExist") as response,
    ):
        assert response.status == 404
        assert await response.json() == {
            "ok": False,
            "error_code": 404,
            "description": "Not Found: method not found",
        }


async def test_json_bodies_are_accepted_like_form_bodies(standin: TelegramBotAPIStandIn) -> None:
    keyboard = {"inline_keyboard": [[{"text": "Ack", "callback_data": "ack"}]]}
    body = {"chat_id": "5", "text": "hi", "parse_mode": "MarkdownV2", "reply_markup": keyboard}

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{standin.base_url}/bot{TOKEN}/sendmessage", json=body) as response,
    ):
        answer = await response.json()

    assert response.status == 200
    assert answer["ok"] is True
    assert answer["result"]["reply_markup"] == keyboard
    [recorded] = standin.sent
    assert (recorded.chat_id, recorded.text, recorded.parse_mode) == (5, "hi", "MarkdownV2")
    assert recorded.reply_markup == keyboard


async def test_multipart_bodies_are_parsed(standin: TelegramBotAPIStandIn) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("chat_id", "-1001")
    form.add_field("text", "multipart")
    form.add_field("reply_markup", '{"inline_keyboard": [[{"text": "Go", "url": "https://t.me"}]]}')

    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{standin.base_url}/bot{TOKEN}/sendMessage", data=form) as response,
    ):
        assert response.status == 200

    [recorded] = standin.sent
    assert (recorded.chat_id, recorded.text) == (-1001, "multipart")
    assert recorded.reply_markup == {"inline_keyboard": [[{"text": "Go", "url": "https://t.me"}]]}


async def test_latency_delays_send_message() -> None:
    async with TelegramBotAPIStandIn(latency=0.2) as standin:
        bot = Bot(token=TOKEN, session=standin.session())
        try:
            started = time.monotonic()
            await bot.send_message(1, "slow")
            assert time.monotonic() - started >= 0.2
        finally:
            await bot.session.close()


async def test_reset_forgets_records_and_faults(bot: Bot, standin: TelegramBotAPIStandIn) -> None:
    standin.block_chat(1)
    with pytest.raises(TelegramForbiddenError):
        await bot.send_message(1, "blocked")
    await bot.send_message(2, "sent")

    standin.reset()
    await bot.send_message(1, "unblocked")

    assert [m.text for m in standin.sent] == ["unblocked"]
    assert standin.rejected == []
    assert standin.calls == {"sendMessage": 1}


async def test_fault_times_must_be_positive(standin: TelegramBotAPIStandIn) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        standin.fail_with_retry_after(1, retry_after=1, times=0)


async def test_dispatcher_polling_replies_through_the_standin(
    standin: TelegramBotAPIStandIn,
) -> None:
    bot = Bot(token=TOKEN, session=standin.session())
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def on_start(message: Message) -> None:
        await message.answer("Welcome!")

    polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
    try:
        await standin.wait_for_calls("getUpdates")
        standin.push_update(command_update(777, "/start"))

        [reply] = await standin.wait_for_messages(1, timeout=5)

        assert (reply.chat_id, reply.text) == (777, "Welcome!")
        assert standin.calls["getMe"] >= 1
    finally:
        await dp.stop_polling()
        await polling
        await bot.session.close()


async def test_photos_media_groups_copies_and_forwards_are_recorded(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    photo = await bot.send_photo(100, "file-1", caption="a cat")
    album = await bot.send_media_group(
        -5, [InputMediaPhoto(media="file-2", caption="one"), InputMediaPhoto(media="file-3")]
    )
    copied = await bot.copy_message(101, from_chat_id=100, message_id=photo.message_id)
    forwarded = await bot.forward_message("@news", from_chat_id=100, message_id=photo.message_id)

    assert photo.caption == "a cat"
    assert photo.photo
    assert [m.caption for m in album] == ["one", None]
    assert isinstance(copied, MessageId)
    assert forwarded.chat.username == "news"
    assert [(m.method, m.chat_id, m.text) for m in standin.sent] == [
        ("sendPhoto", 100, "a cat"),
        ("sendMediaGroup", -5, "one"),
        ("sendMediaGroup", -5, ""),
        ("copyMessage", 101, ""),
        ("forwardMessage", "@news", ""),
    ]
    assert copied.message_id == standin.sent[3].message_id


async def test_a_migrated_group_answers_with_the_supergroup_id(
    bot: Bot, standin: TelegramBotAPIStandIn
) -> None:
    standin.migrate_chat(-5, -1_000_000_000_005)

    with pytest.raises(TelegramMigrateToChat) as caught:
        await bot.send_message(-5, "hello")

    assert caught.value.migrate_to_chat_id == -1_000_000_000_005
    assert [(r.chat_id, r.error_code) for r in standin.rejected] == [(-5, 400)]


async def test_with_limits_it_answers_429_as_telegram_would() -> None:
    limits = TelegramLimits(per_second=3, per_chat_per_second=1, per_group_per_minute=2)
    async with TelegramBotAPIStandIn(limits=limits) as api:
        bot = Bot(TOKEN, session=api.session())
        other_bot = Bot("43:OTHER", session=api.session())
        for chat in (1, 2, 3):
            await bot.send_message(chat, "ok")
        with pytest.raises(TelegramRetryAfter) as bot_wide:
            await bot.send_message(4, "a fourth in one second")
        await other_bot.send_message(4, "another bot has its own budget")
        with pytest.raises(TelegramRetryAfter) as same_chat:
            await other_bot.send_message(4, "a second to one chat in one second")
        await bot.send_message(5, "paid", allow_paid_broadcast=True)
        await bot.session.close()
        await other_bot.session.close()

        assert bot_wide.value.retry_after == 1
        assert same_chat.value.retry_after == 1
        assert api.flood_answers == 2
        assert [r.error_code for r in api.rejected] == [429, 429]
        assert len(api.sent) == 5
        api.reset()
        assert api.flood_answers == 0


async def test_with_limits_a_group_gets_its_count_per_minute() -> None:
    limits = TelegramLimits(per_chat_per_second=1000, per_group_per_minute=2)
    async with TelegramBotAPIStandIn(limits=limits) as api:
        bot = Bot(TOKEN, session=api.session())
        await bot.send_message(-5, "one")
        await bot.send_message(-5, "two")
        with pytest.raises(TelegramRetryAfter) as caught:
            await bot.send_message(-5, "three")
        await bot.session.close()

    assert 59 <= caught.value.retry_after <= 60
