"""Producers on a Redis Cluster: a WAIT on every shard written to, moved slots, failovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio import RedisCluster

from codex_bot.redis import ReplicationError, StreamProducer, SyncStreamProducer
from codex_bot.testing import ClusterNode, RedisClusterServer
from tests._helpers import OWN_SERVERS_ONLY, ids_on

pytestmark = [
    pytest.mark.cluster,
    OWN_SERVERS_ONLY,
]

STREAM = "bot_events"
PARTITIONS = 8
EVENTS = [("order.paid", {"chat_id": chat}) for chat in range(40)]
RIDE_OUT: dict[str, Any] = {"retries": 40, "retry_backoff": 0.05, "retry_backoff_max": 0.5}
"""About 19 s of retries; a master fails over here in a few seconds (node timeout 1 s)."""

Producer = StreamProducer | SyncStreamProducer


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"replicas": 1}


@pytest.fixture(autouse=True)
def healed_cluster(cluster: RedisClusterServer) -> None:
    """Every node back and the cluster ok, the data gone."""
    for node in cluster.nodes:
        if not node.running:
            cluster.restart(node, wait=False)
    cluster.wait_until_ready()
    cluster.flushall()


@pytest.fixture
async def failover_client(cluster: RedisClusterServer) -> AsyncIterator[RedisCluster]:
    """A cluster client that gives up on a dead node after 2 s, its slot map loaded."""
    client = RedisCluster.from_url(cluster.url, decode_responses=True, socket_timeout=2)
    await client.initialize()
    yield client
    await client.aclose()


@pytest.fixture(params=["async", "sync"])
async def make_producer(
    request: pytest.FixtureRequest, cluster: RedisClusterServer, failover_client: RedisCluster
) -> AsyncIterator[Any]:
    """``make_producer(**options)``: a partitioned producer over an async or a sync client."""
    sync_client = redis.RedisCluster.from_url(cluster.url, decode_responses=True, socket_timeout=2)

    def make(**options: Any) -> Producer:
        if request.param == "sync":
            return SyncStreamProducer(sync_client, STREAM, partitions=PARTITIONS, **options)
        return StreamProducer(failover_client, STREAM, partitions=PARTITIONS, **options)

    yield make
    sync_client.close()


async def add_events(producer: Producer, events: list[Any]) -> list[str]:
    if isinstance(producer, SyncStreamProducer):
        return await asyncio.to_thread(producer.add_events, events)
    return await producer.add_events(events)


def wait_calls(node: ClusterNode) -> int:
    with node.client() as client:
        stats = client.info("commandstats")
    return int(stats.get("cmdstat_wait", {}).get("calls", 0))


def masters(cluster: RedisClusterServer) -> list[ClusterNode]:
    return [shard.master for shard in cluster.shards()]


async def test_add_events_waits_once_on_every_shard_it_wrote_to(
    cluster: RedisClusterServer, make_producer: Any
) -> None:
    producer = make_producer(wait_replicas=1)
    before = {node: wait_calls(node) for node in masters(cluster)}

    ids = await add_events(producer, EVENTS)

    assert {node: wait_calls(node) - calls for node, calls in before.items()} == dict.fromkeys(
        before, 1
    )
    streams = [producer.stream_for(data) for _, data in EVENTS]
    for stream in set(streams):
        on_master = ids_on(cluster.node_for_key(stream), stream)
        assert on_master == [i for i, s in zip(ids, streams, strict=True) if s == stream]


async def test_one_event_waits_on_its_own_shard_only(
    cluster: RedisClusterServer, failover_client: RedisCluster
) -> None:
    producer = StreamProducer(failover_client, STREAM, partitions=PARTITIONS, wait_replicas=1)
    before = {node: wait_calls(node) for node in masters(cluster)}

    entry_id = await producer.add_event("order.paid", {"chat_id": 7})

    stream = producer.stream_for({"chat_id": 7})
    home = cluster.node_for_key(stream)
    assert ids_on(home, stream) == [entry_id]
    assert {node: wait_calls(node) - n for node, n in before.items()} == {
        node: int(node is home) for node in before
    }


async def test_a_shard_without_its_replica_fails_only_its_own_events(
    cluster: RedisClusterServer, make_producer: Any
) -> None:
    producer = make_producer(wait_replicas=1, wait_timeout_ms=200)
    streams = [producer.stream_for(data) for _, data in EVENTS]
    shard = next(s for s in cluster.shards() if s.master is cluster.node_for_key(streams[0]))
    for replica in shard.replicas:
        replica.kill()

    with pytest.raises(ReplicationError) as caught:
        await add_events(producer, EVENTS)

    error = caught.value
    assert (error.confirmed, error.wanted, len(error.entry_ids)) == (0, 1, len(EVENTS))
    on_shard = [
        entry_id
        for entry_id, stream in zip(error.entry_ids, streams, strict=True)
        if cluster.node_for_key(stream) is shard.master
    ]
    assert list(error.unconfirmed_ids) == on_shard
    assert 0 < len(on_shard) < len(EVENTS)  # the other shards confirmed theirs
    for stream in set(streams):  # written all the same
        assert ids_on(cluster.node_for_key(stream), stream) == [
            i for i, s in zip(error.entry_ids, streams, strict=True) if s == stream
        ]


async def test_a_moved_slot_is_written_and_waited_on_at_its_new_master(
    cluster: RedisClusterServer, make_producer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    producer = make_producer(wait_replicas=1)
    await add_events(producer, EVENTS[:1])  # the client learns the slot map
    stream = producer.stream_for(EVENTS[0][1])
    old = cluster.node_for_key(stream)
    new = next(node for node in masters(cluster) if node is not old)
    await asyncio.to_thread(cluster.move_slot, cluster.slot_for_key(stream), new)
    waits = wait_calls(new)

    [entry_id] = await add_events(producer, EVENTS[:1])  # routed to the old master first

    assert ids_on(new, stream)[-1] == entry_id
    assert len(ids_on(new, stream)) == 2
    assert wait_calls(new) == waits + 1
    assert "retrying with backoff" in caplog.text  # MOVED, then written where it now lives


async def test_broken_connections_are_retried_with_the_wait_on_the_new_one(
    cluster: RedisClusterServer, make_producer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    producer = make_producer(wait_replicas=1)
    ids = await add_events(producer, EVENTS)
    for node in masters(cluster):
        with node.client() as admin:
            admin.client_kill_filter(_type="normal", skipme=True)

    ids += await add_events(producer, EVENTS)

    # redis-py's sync pool notices a closed socket before it lends it out, and reconnects
    assert ("retrying with backoff" in caplog.text) is isinstance(producer, StreamProducer)
    streams = [producer.stream_for(data) for _, data in EVENTS * 2]
    for stream in set(streams):
        assert set(ids_on(cluster.node_for_key(stream), stream)) >= {
            i for i, s in zip(ids, streams, strict=True) if s == stream
        }


async def test_a_producer_rides_out_a_master_failover(
    cluster: RedisClusterServer, make_producer: Any
) -> None:
    producer = make_producer(**RIDE_OUT)
    streams = [producer.stream_for(data) for _, data in EVENTS]
    victim = cluster.node_for_key(streams[0])

    victim.kill()
    ids = await add_events(producer, EVENTS)  # retries until the replica is promoted

    assert cluster.node_for_key(streams[0]) is not victim
    for stream in set(streams):  # a write retried after a broken connection may be there twice
        assert set(ids_on(cluster.node_for_key(stream), stream)) >= {
            i for i, s in zip(ids, streams, strict=True) if s == stream
        }
