"""The example bot end to end, driven as a user would drive it.

A backend pushes events with ``SyncStreamProducer``; the example bot (built by
``example_bot.app.create_dispatcher``) polls the Bot API stand-in over HTTP with a real
aiogram ``Bot``, consumes a real Redis, and retries through a real arq worker in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis as sync_redis
from aiogram import Bot, Dispatcher
from arq.worker import Worker
from redis.asyncio import Redis

from codex_bot.redis import StreamProducer, SyncStreamProducer
from codex_bot.redis.constants import (
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_HANDLER_FIELD,
    DEAD_SOURCE_ID_FIELD,
)
from codex_bot.testing.bot_api import TelegramBotAPIStandIn
from codex_bot.testing.redis_server import free_port
from example_bot.app import create_dispatcher
from example_bot.backend import booking, notification
from example_bot.backend import main as backend_main
from example_bot.container import Container
from example_bot.features.status.handlers import GREETING
from example_bot.main import main as main_entry
from example_bot.settings import Settings, SettingsError
from example_bot.worker import retry_pool, running_worker
from tests._helpers import command_update, run_python
from tests.conftest import wait_for

TOKEN = "42:E2E"
HANDLER = "example_bot.features.notifications.handlers.send_notification"


@dataclass
class ExampleBot:
    """The example bot, its arq worker and a backend producer, all running."""

    api: TelegramBotAPIStandIn
    settings: Settings
    dp: Dispatcher
    worker: Worker
    producer: SyncStreamProducer
    redis: Redis
    polling: asyncio.Task[None] | None = None

    @property
    def container(self) -> Container:
        container: Container = self.dp["container"]
        return container

    def push(self, event: tuple[str, dict[str, Any]]) -> str:
        return self.producer.add_event(*event)

    async def pending(self) -> int:
        info = await self.redis.xpending(self.settings.stream_name, self.settings.group)
        return int(info["pending"])

    async def dead_letters(self) -> list[tuple[str, dict[str, str]]]:
        return await self.redis.xrange(self.settings.stream_name + ":dead")

    async def stop(self) -> None:
        """Stop polling as SIGTERM would: aiogram's shutdown hooks stop the processor."""
        if self.polling is not None:
            task, self.polling = self.polling, None
            if not task.done():
                await self.dp.stop_polling()
            await task


@pytest.fixture
async def start_bot(
    redis_server: Any, redis: Redis, stream: str
) -> AsyncIterator[Callable[..., Awaitable[ExampleBot]]]:
    """Start the example bot against the stand-in; everything is stopped after the test."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(latency: float = 0.0, **overrides: Any) -> ExampleBot:
            api = await stack.enter_async_context(TelegramBotAPIStandIn(latency=latency))
            settings = Settings(
                bot_token=TOKEN,
                redis_url=redis_server.url,
                stream_name=stream,
                consumer_name="e2e-1",
                poll_interval=0.1,
                claim_min_idle_ms=10_000,
                claim_interval=10.0,
                max_attempts=3,
                retry_delay=0.2,
                max_retry_delay=1.0,
                **overrides,
            )
            settings = dataclasses.replace(settings, **overrides)
            client = Redis.from_url(settings.redis_url, socket_connect_timeout=5)
            stack.push_async_callback(client.aclose)
            arq_pool = retry_pool(settings)
            stack.push_async_callback(arq_pool.aclose)
            worker = await stack.enter_async_context(running_worker(settings, poll_delay=0.02))
            backend = stack.enter_context(sync_redis.Redis.from_url(settings.redis_url))
            bot = Bot(settings.bot_token, session=api.session())
            reload_features(settings.features)
            dp = create_dispatcher(settings, bot=bot, redis=client, arq_pool=arq_pool)
            example = ExampleBot(
                api, settings, dp, worker, SyncStreamProducer(backend, stream), redis
            )
            example.polling = asyncio.create_task(dp.start_polling(bot, handle_signals=False))
            stack.push_async_callback(example.stop)
            await wait_for(
                lambda: example.container.processor().is_running or example.polling.done(),
                message="the bot to start",
            )
            return example

        yield start


async def test_notifications_and_bookings_arrive_as_written(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    bot = await start_bot()

    bot.push(notification(1, "Your order has shipped", url="https://example.com/orders/1"))
    bot.push(notification(2, "Plain text"))
    bot.push(booking(3, "B-1", "Mon 10:00"))
    bot.push(booking(4, "B-2", "Tue 09:00", urgent=True, staff_chat_id=99))
    bot.push(booking(5, "B-3", "Wed 12:00", urgent=True))  # no staff chat: the filter says no
    await bot.api.wait_for_messages(6)
    await wait_for(lambda: bot.container.processor().stats.acked == 5, message="acks")

    button = {"text": "Open", "url": "https://example.com/orders/1"}
    assert sorted((m.chat_id, m.text, m.reply_markup) for m in bot.api.sent) == [
        (1, "Your order has shipped", {"inline_keyboard": [[button]]}),
        (2, "Plain text", None),
        (3, "Booking B-1 is confirmed for Mon 10:00.", None),
        (4, "Booking B-2 is confirmed for Tue 09:00.", None),
        (5, "Booking B-3 is confirmed for Wed 12:00.", None),
        (99, "Urgent booking B-2 at Tue 09:00: please prepare.", None),
    ]
    assert await bot.pending() == 0
    assert await bot.dead_letters() == []


async def test_health_and_metrics_on_health_port(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    port = free_port()
    bot = await start_bot(health_port=port, health_host="127.0.0.1")
    bot.push(notification(1, "Your order has shipped"))
    await wait_for(lambda: bot.container.processor().stats.acked == 1, message="the ack")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"
        async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    stream = bot.settings.stream_name
    assert (
        f'codex_bot_events_handled_total{{stream="{stream}",type="notification.created"}} 1.0'
        in text
    )
    assert f'handler="{HANDLER}",le="+Inf",type="notification.created"}} 1.0' in text
    await bot.stop()
    with pytest.raises(aiohttp.ClientConnectionError):  # the shutdown stopped it
        async with aiohttp.ClientSession() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")


async def test_a_short_429_is_absorbed_by_the_flood_control(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    bot = await start_bot()
    bot.api.fail_with_retry_after(20, retry_after=1, times=1)

    bot.push(notification(20, "Rate limited once"))
    [message] = await bot.api.wait_for_messages(1, timeout=15)
    await wait_for(lambda: bot.container.processor().stats.acked == 1, message="the ack")

    [rejected] = bot.api.rejected
    assert (rejected.chat_id, rejected.error_code) == (20, 429)
    assert (message.chat_id, message.text) == (20, "Rate limited once")
    assert message.at - rejected.at >= 1.0
    assert bot.container.flood_control().stats.flood_absorbed == 1
    assert bot.worker.jobs_complete == 0  # sent again by the middleware, not through arq
    assert await bot.pending() == 0
    assert await bot.dead_letters() == []


async def test_a_429_longer_than_max_flood_wait_is_retried_after_its_retry_after(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    bot = await start_bot(max_flood_wait=0.5)
    bot.api.fail_with_retry_after(21, retry_after=1, times=1)

    bot.push(notification(21, "Rate limited for longer"))
    [message] = await bot.api.wait_for_messages(1, timeout=15)
    await wait_for(lambda: bot.container.processor().stats.acked == 2, message="both acks")

    [rejected] = bot.api.rejected
    assert (rejected.chat_id, rejected.error_code) == (21, 429)
    assert (message.chat_id, message.text) == (21, "Rate limited for longer")
    assert message.at - rejected.at >= 1.0
    assert bot.container.flood_control().stats.flood_raised == 1
    assert bot.worker.jobs_complete == 1  # one redelivery through arq
    assert await bot.pending() == 0
    assert await bot.dead_letters() == []


async def test_a_403_is_dead_lettered_with_telegrams_reason_and_never_retried(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    bot = await start_bot()
    bot.api.block_chat(30)

    entry_id = bot.push(notification(30, "You blocked me"))
    dead = await wait_for(bot.dead_letters, message="the dead letter")
    await bot.stop()  # after shutdown nothing can retry it any more

    [(_, fields)] = dead
    assert fields["type"] == "notification.created"
    assert fields["chat_id"] == "json:30"
    assert fields["text"] == "You blocked me"
    assert fields[DEAD_HANDLER_FIELD] == HANDLER
    assert "Forbidden: bot was blocked by the user" in fields[DEAD_ERROR_FIELD]
    assert fields[DEAD_ATTEMPTS_FIELD] == "1"
    assert fields[DEAD_SOURCE_ID_FIELD] == entry_id
    assert [(c.chat_id, c.error_code) for c in bot.api.rejected] == [(30, 403)]
    assert bot.api.sent == []
    assert bot.worker.jobs_complete == 0
    assert await bot.redis.zcard(bot.settings.arq_queue) == 0
    assert await bot.pending() == 0


async def test_shutdown_drains_in_flight_events_and_leaves_nothing_pending(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    bot = await start_bot(latency=0.3)
    processor = bot.container.processor()

    for n in range(20):
        bot.push(notification(100 + n, f"Drained {n}"))
    await bot.api.wait_for_calls("sendMessage", 20)  # every event is in a handler now
    in_flight_at_stop = processor.in_flight
    await bot.stop()

    assert in_flight_at_stop > 0
    assert not processor.is_running
    assert sorted(m.text for m in bot.api.sent) == sorted(f"Drained {n}" for n in range(20))
    assert await bot.pending() == 0
    groups = await bot.redis.xinfo_groups(bot.settings.stream_name)
    assert (
        groups[0]["last-delivered-id"]
        == (await bot.redis.xrevrange(bot.settings.stream_name))[0][0]
    )


async def test_start_and_status_commands(
    start_bot: Callable[..., Awaitable[ExampleBot]],
) -> None:
    bot = await start_bot()
    bot.push(notification(60, "Hello"))
    await bot.api.wait_for_messages(1)
    await wait_for(lambda: bot.container.processor().stats.acked == 1, message="the ack")

    bot.api.push_update(command_update(61, "/start"))
    await bot.api.wait_for_messages(2)
    bot.api.push_update(command_update(62, "/status"))
    await bot.api.wait_for_messages(3)

    assert bot.api.sent_to(61)[0].text == GREETING
    status = bot.api.sent_to(62)[0].text
    assert re.fullmatch(
        r"Events: running, healthy\n"
        r"handled 1, in flight 0, pending 0, waiting (0|\?), dead letters 0",
        status,
    ), status
    # the stream handler's send and both command answers went through the flood control
    assert bot.container.flood_control().stats.paced == 3


def test_the_demo_runs_and_summarises() -> None:
    # a smaller broadcast than make demo's, with Telegram's real limits: about 3 s
    args = ["--events", "60", "--groups", "1", "--per-group", "3", "--busy", "3"]
    # the demo runs its own Redis: a REDIS_URL of the user's shell is not read
    result = run_python("-m", "example_bot.demo", *args, timeout=50, REDIS_URL="localhost:6379")

    assert result.returncode == 0, result.stdout + result.stderr
    # 54 private chats (two blocked, one missing, one answering 502 twice), a group, a busy
    # chat, two replicas: nothing drew a 429
    assert re.search(
        r"^demo: 60 events, delivered 57, retried 2, dead-lettered 3, pending 0, 429s 0, "
        r"\d+\.\d msg/s, in \d+\.\ds$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
    assert "handled by     replica 1 " in result.stdout
    assert "OK: every event was delivered or dead-lettered; nothing is pending." in result.stdout


def reload_features(features: tuple[str, ...]) -> None:
    """Fresh feature modules: an aiogram Router attaches to one Dispatcher per lifetime."""
    for name in features:
        module = sys.modules.get(f"{name}.feature_setting")
        if module is not None:
            importlib.reload(module)


async def test_the_backend_cli_pushes_an_event_the_bot_delivers(
    start_bot: Callable[..., Awaitable[ExampleBot]], capsys: pytest.CaptureFixture[str]
) -> None:
    bot = await start_bot()
    argv = ["--redis-url", bot.settings.redis_url, "--stream", bot.settings.stream_name]
    argv += ["booking", "--chat-id", "70", "--booking-id", "B-9", "--slot", "Fri 18:00"]

    assert backend_main([*argv, "--urgent", "--staff-chat-id", "71"]) == 0
    sent = await bot.api.wait_for_messages(2)

    entry_id = capsys.readouterr().out.strip()
    assert await bot.redis.xrange(bot.settings.stream_name, entry_id, entry_id)
    assert sorted((m.chat_id, m.text) for m in sent) == [
        (70, "Booking B-9 is confirmed for Fri 18:00."),
        (71, "Urgent booking B-9 at Fri 18:00: please prepare."),
    ]


def test_settings_come_from_the_environment() -> None:
    env = {"BOT_TOKEN": "1:SECRET", "REDIS_URL": "redis://:pw@db:6379/2", "MAX_ATTEMPTS": "7"}
    env |= {"CONSUMER_GROUP": "notifier", "RETRY_DELAY": "2.5", "CONSUMER_NAME": "bot-a"}

    settings = Settings.from_env(env)

    assert (settings.bot_token, settings.redis_url) == ("1:SECRET", "redis://:pw@db:6379/2")
    assert (settings.group, settings.consumer_name) == ("notifier", "bot-a")
    assert (settings.max_attempts, settings.retry_delay) == (7, 2.5)
    assert "SECRET" not in repr(settings)
    assert "pw" not in repr(settings)
    with pytest.raises(SettingsError, match="MAX_ATTEMPTS='x'"):
        Settings.from_env({**env, "MAX_ATTEMPTS": "x"})


def test_main_refuses_to_start_without_a_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BOT_TOKEN", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")

    assert main_entry() == 2
    assert "set BOT_TOKEN in the environment" in capsys.readouterr().err


async def test_main_runs_the_bot_until_sigterm(
    redis_server: Any, redis: Redis, stream: str
) -> None:
    async with TelegramBotAPIStandIn() as api:
        env = {**os.environ, "BOT_TOKEN": "42:MAIN-SECRET", "REDIS_URL": redis_server.url}
        env |= {"STREAM_NAME": stream, "TELEGRAM_API_URL": api.base_url, "POLL_INTERVAL": "0.2"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "example_bot.main",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await api.wait_for_calls("getUpdates", timeout=30)
            await StreamProducer(redis, stream).add_event(*notification(80, "From main"))
            [message] = await api.wait_for_messages(1, timeout=15)
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
            output, _ = await asyncio.wait_for(process.communicate(), timeout=20)

    log = output.decode()
    assert process.returncode == 0, log
    assert (message.chat_id, message.text) == (80, "From main")
    assert "stopped consuming" in log
    assert "MAIN-SECRET" not in log
    assert (await redis.xpending(stream, "example_bot"))["pending"] == 0
