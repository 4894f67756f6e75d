"""Fixtures: a throwaway redis-server per test module, clients, and condition waits."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from codex_bot.redis import RedisStreamStorage
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
