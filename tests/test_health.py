"""``/healthz`` over real HTTP: 200 while consuming, 503 with the reason otherwise.

Redis stopped and started again under a running processor, an entry parked because its dead
letter cannot be written, a stopped processor, the routes mounted on a webhook bot's app,
and the server bound to the bot's startup and shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from codex_bot.health import setup_health, start_health_server
from codex_bot.lifecycle import setup_health_server, setup_redis_events
from codex_bot.metrics import instrument
from codex_bot.redis import BotRedisDispatcher, StreamProducer
from codex_bot.testing import TelegramBotAPIStandIn
from codex_bot.testing.redis_server import free_port
from tests.conftest import Recorder, wait_for

pytestmark = pytest.mark.redis_versions
TOKEN = "42:TEST"


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()


async def answers(url: str, status: int, saying: str = "") -> dict[str, Any] | None:
    """The body when ``url`` answers ``status`` (with a reason containing ``saying``)."""
    code, body = await get(url)
    if code != status or (saying and not any(saying in r for r in body["reasons"])):
        return None
    return body


async def test_healthz_is_503_while_redis_is_down_and_200_once_it_is_back(
    fresh_server: Any, make_client: Any, make_processor: Any, stream: str
) -> None:
    redis = make_client(fresh_server.url, decode_responses=True)
    processor = make_processor(redis, stream, Recorder(), max_backoff=0.2, poll_interval=0.1)
    metrics = instrument(processor, None, CollectorRegistry(), refresh_interval=0)
    async with await start_health_server(processor, port=0, metrics=metrics) as server:
        health = server.url + "/healthz"
        await processor.start_listening()
        body = await wait_for(lambda: answers(health, 200), message="healthy")
        assert body["status"] == "ok"
        assert body["reasons"] == []
        [info] = body["streams"]
        assert info["stream"] == stream
        assert info["consuming"] is True

        fresh_server.stop()
        body = await wait_for(lambda: answers(health, 503), message="503 while Redis is down")
        assert body["status"] == "unavailable"
        [reason] = body["reasons"]
        assert reason.startswith(f"{stream}: not consuming: Redis is unreachable")
        # a scrape still answers at once, without the figures Redis cannot give
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        assert f'codex_bot_healthy{{group="bot",stream="{stream}"}} 0.0' in text
        assert "codex_bot_pending{" not in text

        fresh_server.start()
        await wait_for(lambda: answers(health, 200), message="200 once Redis is back")
        await StreamProducer(redis, stream).add_event("t", {"n": 1})
        await wait_for(lambda: processor.stats.acked == 1, message="consuming again")


async def test_healthz_is_503_with_the_reason_while_an_entry_is_parked(
    redis_server: Any, make_client: Any, make_processor: Any, stream: str
) -> None:
    redis = make_client(redis_server.url, decode_responses=True)
    await redis.set(stream + ":dead", "not a stream")  # every dead-letter write fails
    bad_id = await redis.xadd(stream, {"no": "type"})
    processor = make_processor(
        redis, stream, Recorder(), claim_min_idle_ms=1, claim_interval=0.01, poll_interval=0.01
    )
    async with await start_health_server(processor, port=0, host="127.0.0.1") as server:
        health = server.url + "/healthz"
        await processor.start_listening()
        # before the group exists it answers 503 too: wait for the reason that matters
        body = await wait_for(
            lambda: answers(health, 503, saying="parked"), message="503 for the parked entry"
        )
        [reason] = body["reasons"]
        assert reason.startswith(f"{stream}: 1 entr(ies) parked")
        assert "entry has no 'type' field" in reason
        [info] = body["streams"]
        assert info["running"] is True
        assert info["parked"] == 1
        assert list(info["parked_entries"]) == [bad_id]

        await redis.delete(stream + ":dead")
        assert processor.release_parked() == [bad_id]
        await wait_for(lambda: processor.stats.dead_lettered == 1, message="the letter, at last")
        status, body = await get(health)
        assert (status, body["reasons"]) == (200, [])


async def test_a_stopped_processor_is_503(redis: Any, make_processor: Any, stream: str) -> None:
    processor = make_processor(redis, stream, Recorder())
    async with await start_health_server(processor, port=0) as server:
        status, body = await get(server.url + "/healthz")
        assert status == 503
        assert body["reasons"] == [f"{stream}: the processor is stopped"]
        async with aiohttp.ClientSession() as http, http.get(server.url + "/metrics") as resp:
            assert resp.status == 404  # no metrics given, no /metrics


async def test_the_routes_mounted_on_a_webhook_bots_app(
    redis: Any, make_processor: Any, stream: str
) -> None:
    events = BotRedisDispatcher()
    processor = make_processor(redis, stream, events.process_message)
    dp = Dispatcher()
    setup_redis_events(dp, processor, redis_dispatcher=events, container=object())
    metrics = instrument(processor, events, CollectorRegistry())
    async with TelegramBotAPIStandIn() as api:
        bot = Bot(TOKEN, session=api.session())
        app = web.Application()
        setup_health(app, processor, metrics=metrics)
        setup_application(app, dp, bot=bot)
        SimpleRequestHandler(dispatcher=dp, bot=bot).register(app, path="/webhook")
        server = TestServer(app)
        await server.start_server()
        try:
            assert processor.is_running  # the app's startup started it
            await wait_for(lambda: answers(str(server.make_url("/healthz")), 200))
            async with aiohttp.ClientSession() as http:
                async with http.get(server.make_url("/metrics")) as response:
                    text = await response.text()
                async with http.post(server.make_url("/webhook"), json={}) as response:
                    webhook_status = response.status
            assert f'codex_bot_healthy{{group="bot",stream="{stream}"}} 1.0' in text
            assert f'codex_bot_pending{{group="bot",stream="{stream}"}} 0.0' in text
            assert webhook_status != 404  # the bot's own route is still there
        finally:
            await server.close()
    assert not processor.is_running


async def test_the_health_server_lives_from_the_bots_startup_to_its_shutdown(
    redis: Any, make_processor: Any, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    processor = make_processor(redis, stream, Recorder())
    dp = Dispatcher()
    setup_redis_events(dp, processor)
    port = free_port()
    setup_health_server(dp, processor, port=port, host="127.0.0.1")
    health = f"http://127.0.0.1:{port}/healthz"
    await dp.emit_startup()
    try:
        await wait_for(lambda: answers(health, 200), message="healthy after startup")
        # a second bot on the same port logs why it has no health checks and runs on
        other = Dispatcher()
        setup_health_server(other, processor, port=port, host="127.0.0.1")
        caplog.set_level(logging.ERROR, logger="codex_bot.lifecycle")
        await other.emit_startup()
        assert any("no health checks" in r.getMessage() for r in caplog.records)
        await other.emit_shutdown()
    finally:
        await dp.emit_shutdown()
    assert not processor.is_running
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(health)
