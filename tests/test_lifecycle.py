"""setup_redis_events: the processor starts and stops with aiogram polling and webhook apps.

A real aiogram Bot talks HTTP to the Bot API stand-in; the processor consumes a real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command
from aiogram.types import Message
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from aiohttp.test_utils import TestServer
from dependency_injector import containers, providers
from redis.asyncio import Redis

from codex_bot.lifecycle import setup_redis_events
from codex_bot.redis import (
    BotRedisDispatcher,
    RedisRouter,
    RedisStreamProcessor,
    RedisStreamStorage,
    StreamProducer,
)
from codex_bot.redis.exceptions import CodexBotError
from codex_bot.testing.bot_api import TelegramBotAPIStandIn
from codex_bot.testing.redis_server import RedisServer
from tests._helpers import command_update
from tests.conftest import wait_for

TOKEN = "42:TEST"


class Greeter:
    """A service handlers take from the container; it sends through the container's bot."""

    def __init__(self, bot: Bot, signature: str) -> None:
        self.bot = bot
        self.signature = signature

    async def greet(self, chat_id: int, name: str) -> None:
        await self.bot.send_message(chat_id, f"Hello, {name}! {self.signature}")


class Container(containers.DeclarativeContainer):
    """The documented shape: the bot, and services built from it."""

    bot = providers.Dependency(instance_of=Bot)
    greeter = providers.Singleton(Greeter, bot=bot, signature="-- the team")


greetings = RedisRouter()


@greetings.message("user.joined")
async def on_joined(payload: dict[str, Any], container: Container) -> None:
    await container.greeter().greet(payload["chat_id"], payload["name"])


@greetings.message("user.left")
async def on_left(payload: dict[str, Any], container: Container) -> None:
    await container.bot().send_message(payload["chat_id"], "Goodbye")


@pytest.fixture
async def slow_api() -> AsyncIterator[TelegramBotAPIStandIn]:
    """Each sendMessage takes 0.3 s: long enough to be in flight when the bot stops."""
    async with TelegramBotAPIStandIn(latency=0.3) as server:
        yield server


def bot_processor(redis: Redis, stream: str) -> RedisStreamProcessor:
    """The bot's processor (consumer ``bot-1``): not started, no callback yet."""
    return RedisStreamProcessor(
        RedisStreamStorage(redis), stream, "bot", "bot-1", poll_interval=0.1, drain_timeout=5
    )


def make_events() -> BotRedisDispatcher:
    events = BotRedisDispatcher()
    events.include_router(greetings)
    return events


@contextlib.asynccontextmanager
async def polling(dp: Dispatcher, bot: Bot, processor: RedisStreamProcessor) -> AsyncIterator[None]:
    """Run ``dp.start_polling(bot)`` until the block ends, then stop it as a signal would."""
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, polling_timeout=1))
    try:
        await wait_for(lambda: processor.is_running or task.done(), message="startup hooks")
        yield
    finally:
        if not task.done():
            await dp.stop_polling()
        await task


async def pending(redis: Redis, stream: str) -> int:
    return int((await redis.xpending(stream, "bot"))["pending"])


async def test_polling_starts_the_processor_and_shutdown_stops_it(
    standin: TelegramBotAPIStandIn, redis: Redis, stream: str
) -> None:
    bot = Bot(TOKEN, session=standin.session())
    dp = Dispatcher()
    processor = bot_processor(redis, stream)
    events = make_events()
    setup_redis_events(dp, processor, redis_dispatcher=events, container=Container(bot=bot))
    producer = StreamProducer(redis, stream)

    assert not processor.is_running
    async with polling(dp, bot, processor):
        assert processor.is_running
        await producer.add_event("user.joined", {"chat_id": 7, "name": "Ann"})
        await producer.add_event("user.left", {"chat_id": 8})
        sent = await standin.wait_for_messages(2)
        await wait_for(lambda: processor.stats.acked == 2, message="acks")

    assert not processor.is_running
    assert sorted((m.chat_id, m.text) for m in sent) == [
        (7, "Hello, Ann! -- the team"),
        (8, "Goodbye"),
    ]
    assert events.container is not None
    assert await pending(redis, stream) == 0


async def test_shutdown_lets_in_flight_handlers_send_before_the_session_closes(
    slow_api: TelegramBotAPIStandIn, redis: Redis, stream: str
) -> None:
    bot = Bot(TOKEN, session=slow_api.session())
    dp = Dispatcher()
    processor = bot_processor(redis, stream)
    setup_redis_events(dp, processor, redis_dispatcher=make_events(), container=Container(bot=bot))

    async with polling(dp, bot, processor):
        await StreamProducer(redis, stream).add_events(
            [("user.joined", {"chat_id": chat, "name": "Bo"}) for chat in (1, 2, 3)]
        )
        await slow_api.wait_for_calls("sendMessage", 3)
        assert processor.in_flight >= 1  # the last send to arrive is still waiting on the API

    assert [m.chat_id for m in sorted(slow_api.sent, key=lambda m: m.chat_id)] == [1, 2, 3]
    assert processor.stats.handled == 3
    assert processor.stats.failed == 0
    assert await pending(redis, stream) == 0


async def test_the_bot_starts_and_stops_while_redis_is_down(
    standin: TelegramBotAPIStandIn, fresh_server: RedisServer, stream: str
) -> None:
    fresh_server.stop()
    redis = Redis.from_url(fresh_server.url, socket_connect_timeout=1, decode_responses=True)
    bot = Bot(TOKEN, session=standin.session())
    dp = Dispatcher()
    processor = bot_processor(redis, stream)
    setup_redis_events(dp, processor, redis_dispatcher=make_events(), container=Container(bot=bot))
    try:
        async with polling(dp, bot, processor):
            # polling runs: startup did not wait for Redis
            await standin.wait_for_calls("getUpdates")
            assert processor.is_running
            assert not processor.is_healthy

            fresh_server.start()
            await StreamProducer(redis, stream).add_event("user.left", {"chat_id": 5})
            sent = await standin.wait_for_messages(1, timeout=20)
            assert processor.is_healthy

        assert not processor.is_running
        assert [(m.chat_id, m.text) for m in sent] == [(5, "Goodbye")]
    finally:
        await redis.aclose()


async def test_a_webhook_app_starts_the_processor_and_cleanup_stops_it(
    slow_api: TelegramBotAPIStandIn, redis: Redis, stream: str
) -> None:
    bot = Bot(TOKEN, session=slow_api.session())
    dp = Dispatcher()
    commands = Router()

    @commands.message(Command("ping"))
    async def ping(message: Message) -> None:
        await message.answer("pong")

    dp.include_router(commands)
    processor = bot_processor(redis, stream)
    setup_redis_events(dp, processor, redis_dispatcher=make_events(), container=Container(bot=bot))
    app = web.Application()
    # setup_application first: aiohttp runs shutdown callbacks in order, and the request
    # handler's closes the bot session, which draining handlers still need.
    setup_application(app, dp, bot=bot)
    SimpleRequestHandler(dispatcher=dp, bot=bot).register(app, path="/webhook")
    server = TestServer(app)

    await server.start_server()
    try:
        assert processor.is_running
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                server.make_url("/webhook"), json={"update_id": 1, **command_update(9, "/ping")}
            )
            assert response.status == 200
        await StreamProducer(redis, stream).add_event("user.joined", {"chat_id": 10, "name": "Cy"})
        await slow_api.wait_for_calls("sendMessage", 2)
    finally:
        await server.close()

    assert not processor.is_running
    assert sorted((m.chat_id, m.text) for m in slow_api.sent) == [
        (9, "pong"),
        (10, "Hello, Cy! -- the team"),
    ]
    assert await pending(redis, stream) == 0


async def test_a_container_that_builds_the_bot_itself(
    standin: TelegramBotAPIStandIn, redis: Redis, stream: str
) -> None:
    class BotContainer(containers.DeclarativeContainer):
        bot = providers.Singleton(Bot, token=TOKEN, session=providers.Object(standin.session()))
        greeter = providers.Singleton(Greeter, bot=bot, signature="(built)")

    container = BotContainer()
    dp = Dispatcher()
    processor = bot_processor(redis, stream)
    setup_redis_events(dp, processor, redis_dispatcher=make_events(), container=container)

    async with polling(dp, container.bot(), processor):
        await StreamProducer(redis, stream).add_event("user.joined", {"chat_id": 3, "name": "Di"})
        sent = await standin.wait_for_messages(1)

    assert [(m.chat_id, m.text) for m in sent] == [(3, "Hello, Di! (built)")]


async def test_hooks_drive_a_processor_that_has_its_own_callback(redis: Redis, stream: str) -> None:
    seen: list[dict[str, Any]] = []

    async def callback(payload: dict[str, Any]) -> None:
        seen.append(payload)

    processor = bot_processor(redis, stream)
    processor.set_message_callback(callback)
    dp = Dispatcher()
    setup_redis_events(dp, processor)

    await dp.emit_startup()
    assert processor.is_running
    await StreamProducer(redis, stream).add_event("x.y", {"n": 1})
    await wait_for(lambda: seen, message="the callback")
    await dp.emit_shutdown()

    assert not processor.is_running
    assert seen == [{"type": "x.y", "n": 1}]


def test_a_container_needs_a_redis_dispatcher(redis: Redis, stream: str) -> None:
    with pytest.raises(ValueError, match="redis_dispatcher"):
        setup_redis_events(Dispatcher(), bot_processor(redis, stream), container=object())


async def test_the_readme_wiring_example(
    standin: TelegramBotAPIStandIn, redis: Redis, redis_server: Any
) -> None:
    """``example_bot/minimal.py`` is the README's example; only the bot's session differs."""
    from example_bot.minimal import build

    bot = Bot(TOKEN, session=standin.session())
    async with Redis.from_url(redis_server.url) as client:
        dp = build(bot, client)
        task = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
        await standin.wait_for_calls("getUpdates")
        await StreamProducer(redis, "bot_events").add_event(
            "notification.created", {"chat_id": 42, "text": "Your order has shipped"}
        )
        sent = await standin.wait_for_messages(1)
        await dp.stop_polling()
        await task

    assert [(m.chat_id, m.text) for m in sent] == [(42, "Your order has shipped")]
    assert (await redis.xpending("bot_events", "my_bot"))["pending"] == 0


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "set BOT_TOKEN and REDIS_URL (redis://host:6379/0)"),
        ({"BOT_TOKEN": "42:SECRET", "REDIS_URL": ""}, "set BOT_TOKEN and REDIS_URL"),
        ({"REDIS_URL": "redis://127.0.0.1:1/0"}, "set BOT_TOKEN and REDIS_URL"),
        ({"BOT_TOKEN": "42:SECRET", "REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379'"),
        ({"BOT_TOKEN": "SECRET", "REDIS_URL": "redis://127.0.0.1:1/0"}, "BOT_TOKEN is not a bot"),
    ],
)
def test_the_minimal_bot_says_what_is_missing_and_exits_2(
    environ: dict[str, str],
    expected: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from example_bot.minimal import main

    monkeypatch.delenv("BOT_TOKEN", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    assert main() == 2
    err = capsys.readouterr().err
    assert err.startswith(expected)
    assert err.count("\n") == 1
    assert "SECRET" not in err


def test_setup_redis_events_refuses_what_would_fail_in_aiogram_startup(redis: Redis) -> None:
    processor = RedisStreamProcessor(RedisStreamStorage(redis), "s", "bot", "c1")
    with pytest.raises(CodexBotError, match="no message callback"):
        setup_redis_events(Dispatcher(), processor)
    never_set_up = BotRedisDispatcher()
    with pytest.raises(CodexBotError, match="never set up"):
        setup_redis_events(Dispatcher(), processor, redis_dispatcher=never_set_up)
    processor.set_message_callback(never_set_up.process_message)
    with pytest.raises(CodexBotError, match="never set up"):
        setup_redis_events(Dispatcher(), processor)
    never_set_up.setup(container=None)
    setup_redis_events(Dispatcher(), processor)  # now it can consume


async def test_consuming_is_logged_once_the_group_is_ready(
    fresh_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="codex_bot.redis.processor")
    redis = Redis.from_url(fresh_server.url)
    fresh_server.stop()
    processor = RedisStreamProcessor(RedisStreamStorage(redis), "s", "bot", "c1", max_backoff=0.1)
    events = BotRedisDispatcher()
    events.setup(container=None)
    processor.set_message_callback(events.process_message)
    try:
        await processor.start_listening()
        await wait_for(lambda: processor.stats.errors >= 2, message="failed connections")
        assert not [r for r in caplog.records if r.getMessage().startswith("consuming ")]
        fresh_server.start()
        await wait_for(lambda: processor.is_healthy, message="the group in place")
        consuming = [r for r in caplog.records if r.getMessage().startswith("consuming ")]
        assert [r.getMessage() for r in consuming] == ["consuming s as bot/c1"]
    finally:
        await processor.stop_listening()
        await redis.aclose()
