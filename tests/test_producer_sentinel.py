"""Producers and the processor across a Sentinel failover: what WAIT protects and what it costs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis as sync_redis
import redis.sentinel
from redis.asyncio import Redis

from codex_bot.redis import (
    RedisStreamProcessor,
    ReplicationError,
    StreamProducer,
    SyncStreamProducer,
)
from codex_bot.testing import RedisSentinelServer, ServerProcess
from tests._helpers import OWN_SERVERS_ONLY, ids_on, sentinels
from tests.conftest import Recorder, wait_for

pytestmark = [
    pytest.mark.sentinel,
    OWN_SERVERS_ONLY,
]

STREAM = "bot_events"
RIDE_OUT: dict[str, Any] = {"retries": 40, "retry_backoff": 0.05, "retry_backoff_max": 0.5}
"""About 19 s of retries: a failover here takes about 5 s (down_after_ms=2000, one Sentinel)."""
CLIENT: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 1}


@pytest.fixture(scope="module")
def sentinel_options() -> dict[str, Any]:
    # Two replicas: after a failover the new primary still has one, so WAIT 1 still holds.
    return {"replicas": 2}


@pytest.fixture(autouse=True)
def healed_sentinel(sentinel: RedisSentinelServer) -> None:
    """Every node up and syncing, the data gone: what one test breaks, the next finds mended."""
    for node in sentinel.nodes:
        if not node.running:
            sentinel.restart(node, wait=False)
        sentinel.resume_replication(node, wait=False)
    sentinel.wait_until_ready()
    with sentinel.primary().client() as client:
        client.flushall()
        client.wait(2, 5000)


@contextlib.asynccontextmanager
async def master_for(setup: RedisSentinelServer) -> AsyncIterator[Redis]:
    """A client of whichever node the Sentinels name the primary, as an app would use."""
    async with sentinels(setup.sentinel_addresses) as found:
        client = found.master_for(setup.master_name, decode_responses=True, **CLIENT)
        try:
            yield client
        finally:
            await client.aclose()
            await client.connection_pool.disconnect()  # given a pool, aclose() leaves it open


async def kill_and_fail_over(setup: RedisSentinelServer) -> ServerProcess:
    old = setup.primary()
    old.kill()
    return await asyncio.to_thread(setup.wait_for_failover, old, 30)


async def test_a_producer_keeps_pushing_across_a_primary_failover(
    sentinel: RedisSentinelServer,
) -> None:
    async with master_for(sentinel) as master:
        producer = StreamProducer(master, STREAM, wait_replicas=1, **RIDE_OUT)
        confirmed: list[str] = []
        failed_over = asyncio.Event()

        async def push() -> None:
            after = 0
            while after < 20:  # every call either returns ids or raises: none may raise
                if len(confirmed) % 5:
                    confirmed.append(await producer.add_event("order.paid", {"chat_id": 1}))
                else:
                    confirmed.extend(
                        await producer.add_events([("order.paid", {"chat_id": 2})] * 3)
                    )
                after += failed_over.is_set()

        pushing = asyncio.create_task(push())
        await wait_for(lambda: len(confirmed) >= 20 or pushing.done(), message="first pushes")
        new = await kill_and_fail_over(sentinel)
        failed_over.set()
        await pushing

    assert set(confirmed) <= set(ids_on(new, STREAM))
    assert len(set(confirmed)) == len(confirmed)


async def test_wait_replicas_refuses_what_a_failover_then_loses(
    sentinel: RedisSentinelServer,
) -> None:
    async with master_for(sentinel) as master:
        careless = StreamProducer(master, STREAM)
        careful = StreamProducer(master, STREAM, wait_replicas=1, wait_timeout_ms=200)
        confirmed = await careful.add_events([("order.paid", {"n": n}) for n in range(5)])
        for replica in sentinel.replicas():
            sentinel.pause_replication(replica)

        acknowledged = await careless.add_events([("order.paid", {"n": n}) for n in range(5)])
        with pytest.raises(ReplicationError) as refused:
            await careful.add_events([("order.paid", {"n": n}) for n in range(5, 10)])
        new = await kill_and_fail_over(sentinel)

    error = refused.value
    assert (error.confirmed, error.wanted, len(error.entry_ids)) == (0, 1, 5)
    survivors = set(ids_on(new, STREAM))
    assert set(confirmed) <= survivors  # WAIT 1 confirmed them: the failover kept them
    assert not set(acknowledged) & survivors  # the primary said OK, then they were gone
    assert not set(error.entry_ids) & survivors  # lost too, but the caller was told


async def test_the_processor_consumes_across_a_primary_failover(
    sentinel: RedisSentinelServer,
    make_processor: Callable[..., RedisStreamProcessor],
) -> None:
    recorder = Recorder()
    async with master_for(sentinel) as master, master_for(sentinel) as consuming:
        processor = make_processor(
            consuming,
            STREAM,
            recorder,
            claim_min_idle_ms=500,
            claim_interval=0.5,
            max_backoff=0.5,
        )
        await processor.start_listening()
        producer = StreamProducer(master, STREAM, wait_replicas=1, **RIDE_OUT)
        pushed = [await producer.add_event("order.paid", {"n": n}) for n in range(30)]
        await wait_for(lambda: len(recorder.payloads) >= 10, message="some handled")

        killing = asyncio.create_task(kill_and_fail_over(sentinel))
        for n in range(30, 60):  # one at a time, so the kill lands between two of them
            pushed.append(await producer.add_event("order.paid", {"n": n}))  # noqa: PERF401 - see above
        new = await killing
        pushed += await producer.add_events([("order.paid", {"n": n}) for n in range(60, 90)])

        await wait_for(
            lambda: set(pushed) <= set(recorder.entry_ids), timeout=30, message="all handled"
        )
        await wait_for(
            lambda: _no_pending(new), timeout=15, message="nothing pending on the new primary"
        )
        assert processor.is_running
        await processor.stop_listening()  # before its client closes

    assert {p["n"] for p in recorder.payloads} == set(range(90))


def _no_pending(node: ServerProcess) -> bool:
    with node.client() as client:
        return int(client.xpending(STREAM, "bot")["pending"]) == 0


def test_the_sync_producer_keeps_pushing_across_a_failover(
    sentinel: RedisSentinelServer,
) -> None:
    sentinels = redis.sentinel.Sentinel(sentinel.sentinel_addresses, socket_timeout=2)
    master: sync_redis.Redis = sentinels.master_for(sentinel.master_name, **CLIENT)
    try:
        producer = SyncStreamProducer(master, STREAM, wait_replicas=1, **RIDE_OUT)
        confirmed = [producer.add_event("order.paid", {"n": n}) for n in range(10)]
        # SENTINEL FAILOVER: the pooled connection now reaches a replica, which says READONLY
        new = sentinel.failover()
        confirmed += producer.add_events([("order.paid", {"n": n}) for n in range(10, 20)])
        confirmed.append(producer.add_event("order.paid", {"n": 20}))
    finally:
        master.connection_pool.disconnect()
        for connection in sentinels.sentinels:
            connection.close()

    assert set(confirmed) <= set(ids_on(new, STREAM))
    assert len(confirmed) == 21
