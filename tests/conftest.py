"""Fixtures: a throwaway redis-server per test module, clients, processors, condition waits."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage, current_event
from codex_bot.redis.types import MessageCallback
from codex_bot.testing.redis_server import RedisServer


class ExternalRedis:
    """``REDIS_URL`` given by the environment: used as is, never stopped or restarted."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stop(self) -> None:
        pytest.skip("REDIS_URL points at an external server the tests cannot stop")

    kill = restart = start = stop


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer | ExternalRedis]:
    """A redis-server of this module's own (or the one ``REDIS_URL`` names)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield ExternalRedis(url)
        return
    with RedisServer() as server:
        yield server


@pytest.fixture
def fresh_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop, kill or restart it."""
    if os.environ.get("REDIS_URL"):
        pytest.skip("fault tests need a redis-server the tests start themselves")
    with RedisServer() as server:
        yield server


@pytest.fixture
def persistent_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own that keeps an append-only file across restarts."""
    if os.environ.get("REDIS_URL"):
        pytest.skip("fault tests need a redis-server the tests start themselves")
    with RedisServer(persistent=True) as server:
        yield server


@pytest.fixture
async def redis(redis_server: RedisServer | ExternalRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def storage(redis: Redis) -> RedisStreamStorage:
    return RedisStreamStorage(redis)


@pytest.fixture
def stream() -> str:
    return f"events:{uuid.uuid4().hex[:8]}"


async def wait_for(
    condition: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 10.0,
    message: str = "condition",
) -> Any:
    """Poll ``condition`` (sync or async) until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Redis]]:
    """``make_client(url, **kwargs)``: an asyncio client closed after the test."""
    clients: list[Redis] = []

    def make(url: str, **kwargs: Any) -> Redis:
        client = Redis.from_url(url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def make_processor() -> AsyncIterator[Callable[..., RedisStreamProcessor]]:
    """``make_processor(redis, stream, callback, **options)``: stopped after the test.

    Defaults suit tests: group ``bot``, consumer ``c1``, a short ``drain_timeout``; any
    constructor option can be passed. The processor is not started.
    """
    processors: list[RedisStreamProcessor] = []

    def make(
        redis: Redis, stream: str, callback: MessageCallback, **options: Any
    ) -> RedisStreamProcessor:
        group = options.pop("group", "bot")
        consumer = options.pop("consumer", "c1")
        options.setdefault("drain_timeout", 2.0)
        processor = RedisStreamProcessor(
            RedisStreamStorage(redis), stream, group, consumer, **options
        )
        processor.set_message_callback(callback)
        processors.append(processor)
        return processor

    yield make
    for processor in processors:
        await processor.stop_listening()


class Recorder:
    """A message callback that records every payload and entry id it was called with.

    Args:
        fail: Raise ``RuntimeError`` instead of returning (after recording).
    """

    def __init__(self, *, fail: bool = False) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.entry_ids: list[str] = []
        self.fail = fail

    async def __call__(self, payload: dict[str, Any]) -> None:
        event = current_event()
        self.payloads.append(payload)
        self.entry_ids.append(event.entry_id if event else "")
        if self.fail:
            raise RuntimeError("handler failed on purpose")


async def pending_count(redis: Redis, stream: str, group: str = "bot") -> int:
    """How many entries the group's PEL holds (XPENDING)."""
    return int((await redis.xpending(stream, group))["pending"])


async def blocked_clients(redis: Redis) -> int:
    """How many clients the server holds in a blocking command right now."""
    return int((await redis.info("clients"))["blocked_clients"])
