"""RedisClusterServer forms, serves, fails and recovers; how redis-py routes commands on it."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException

from codex_bot.testing import ClusterNode, RedisClusterServer
from codex_bot.testing.cluster import SLOTS
from codex_bot.testing.cluster_node import newest_layout, parse_nodes
from tests._helpers import OWN_SERVERS_ONLY, getkeys_calls
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.cluster,
    OWN_SERVERS_ONLY,
]

STREAM = "{orders}:events"
DEAD = "{orders}:events:dead"


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"persistent": True}


def key_on(cluster: RedisClusterServer, node: ClusterNode) -> str:
    return next(k for i in range(1000) if cluster.node_for_key(k := f"key:{i}") is node)


async def test_the_cluster_splits_every_slot_between_three_masters(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    shards = cluster.shards()

    assert [shard.slots for shard in shards] == [((0, 5460),), ((5461, 10921),), ((10922, 16383),)]
    assert {shard.master for shard in shards} == set(cluster.nodes)
    assert set(cluster.states().values()) == {"ok"}
    assert sum(last - first + 1 for s in shards for first, last in s.slots) == SLOTS
    await cluster_client.initialize()
    assert sorted(node.port for node in cluster_client.get_primaries()) == sorted(
        node.port for node in cluster.nodes
    )


async def test_a_cluster_client_writes_and_reads_on_every_shard(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    keys = {node: key_on(cluster, node) for node in cluster.nodes}
    for node, key in keys.items():
        await cluster_client.set(key, node.port)

    for node, key in keys.items():
        assert await cluster_client.get(key) == str(node.port)
        with node.client() as direct:  # the key lives on the master the fixture names
            assert direct.get(key) == str(node.port)


async def test_consumer_groups_work_on_a_hash_tagged_stream(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    await cluster_client.xgroup_create(STREAM, "bot", "0", mkstream=True)
    entry_id = await cluster_client.xadd(STREAM, {"type": "order.paid"})

    reply = await cluster_client.xreadgroup("bot", "c1", {STREAM: ">"}, count=10)

    assert reply == [[STREAM, [(entry_id, {"type": "order.paid"})]]]
    assert await cluster_client.xack(STREAM, "bot", entry_id) == 1
    assert cluster.node_for_key(DEAD) is cluster.node_for_key(STREAM)


async def test_a_killed_master_fails_its_slots_and_serves_again_after_a_restart(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    victim = cluster.node_for_key(STREAM)
    await cluster_client.xadd(STREAM, {"type": "kept"})

    victim.kill()

    with pytest.raises(RedisConnectionError):
        await cluster_client.xlen(STREAM)
    await wait_for(lambda: set(cluster.states().values()) == {"fail"}, message="cluster_state:fail")
    cluster.restart(victim)  # persistent: the append-only file brings the entry back
    assert cluster.node_for_key(STREAM) is victim
    assert await cluster_client.xlen(STREAM) == 1
    await cluster_client.xadd(STREAM, {"type": "after"})
    assert await cluster_client.xlen(STREAM) == 2


async def test_a_shard_restarted_empty_keeps_its_slots(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    shards = cluster.shards()
    node = cluster.node_for_key(STREAM)
    await cluster_client.xadd(STREAM, {"type": "lost"})

    cluster.restart(node, empty=True, wait=False)
    assert not cluster.is_ready()  # a restarted master holds back for about 2 s
    cluster.wait_until_ready()

    assert cluster.shards() == shards
    assert await cluster_client.xlen(STREAM) == 0
    await cluster_client.xadd(STREAM, {"type": "new"})
    assert await cluster_client.xlen(STREAM) == 1


async def test_xreadgroup_costs_a_command_getkeys_round_trip_unless_targeted(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    # XREADGROUP's keys move with STREAMS, so redis-py asks the server where they are.
    await cluster_client.xgroup_create(STREAM, "bot", "0", mkstream=True)
    before = getkeys_calls(cluster)
    for _ in range(5):
        await cluster_client.xreadgroup("bot", "c1", {STREAM: ">"}, count=10)
    assert getkeys_calls(cluster) - before == 5

    node = cluster_client.get_node_from_key(STREAM)
    before = getkeys_calls(cluster)
    for _ in range(5):
        await cluster_client.execute_command(
            "XREADGROUP", "GROUP", "bot", "c1", "STREAMS", STREAM, ">", target_nodes=node
        )
    assert getkeys_calls(cluster) == before


async def test_a_command_sent_to_the_old_owner_follows_moved(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    entry_id = await cluster_client.xadd(STREAM, {"type": "moved"})
    stale = cluster_client.get_node_from_key(STREAM)
    owner = cluster.node_for_key(STREAM)
    to = next(node for node in cluster.nodes if node is not owner)

    cluster.move_slot(cluster.slot_for_key(STREAM), to)

    assert cluster.node_for_key(STREAM) is to
    reply = await cluster_client.execute_command("XRANGE", STREAM, "-", "+", target_nodes=stale)
    assert reply == [(entry_id, {"type": "moved"})]
    assert cluster_client.get_node_from_key(STREAM).port == to.port  # the MOVED updated the map
    cluster.move_slot(cluster.slot_for_key(STREAM), owner)


async def test_scripts_take_keys_of_one_slot_and_are_loaded_on_every_master(
    cluster: RedisClusterServer, cluster_client: RedisCluster
) -> None:
    script = cluster_client.register_script("return redis.call('SET', KEYS[1], ARGV[1]) and #KEYS")

    assert await script(keys=["{orders}:a", "{orders}:b"], args=["x"]) == 2
    for node in cluster.nodes:  # NOSCRIPT made redis-py send SCRIPT LOAD to every master
        with node.client() as redis:
            assert redis.script_exists(script.sha) == [True]

    apart = ["orders:events", "orders:events:dead"]
    assert cluster.slot_for_key(apart[0]) != cluster.slot_for_key(apart[1])
    with pytest.raises(RedisClusterException, match="same key slot"):
        await script(keys=apart, args=["x"])
    assert await cluster_client.exists(apart[0]) == 0  # refused before anything was sent


# How two nodes see a cluster right after "b" took over "a"'s slots, before gossip reached
# the second one: a killed master, its promoted replica, and a master untouched by it.
_FRESH = """\
a 127.0.0.1:7001@17001 master,fail - 0 0 1 disconnected
b 127.0.0.1:7002@17002 myself,master - 0 0 4 connected 0-8191
c 127.0.0.1:7003@17003 master - 0 0 3 connected 8192-16383
"""
_STALE = """\
a 127.0.0.1:7001@17001 master,fail? - 0 0 1 disconnected 0-8191
b 127.0.0.1:7002@17002 slave a 0 0 1 connected
c 127.0.0.1:7003@17003 myself,master - 0 0 3 connected 8192-16383
"""


@pytest.mark.parametrize("order", [(_FRESH, _STALE), (_STALE, _FRESH)])
def test_where_views_disagree_the_claim_with_the_higher_epoch_wins(
    order: tuple[str, str],
) -> None:
    layout = newest_layout([parse_nodes(text) for text in order])

    assert layout == {"b": (((0, 8191),), ()), "c": (((8192, 16383),), ())}


def test_a_slot_nobody_claims_has_no_owner() -> None:
    stale = parse_nodes(_STALE.replace(" 0-8191", ""))

    assert newest_layout([stale]) == {"c": (((8192, 16383),), ())}


async def test_a_replica_takes_over_a_killed_master_which_rejoins_as_its_replica() -> None:
    with RedisClusterServer(replicas=1) as cluster:
        cluster_client = RedisCluster.from_url(cluster.url, decode_responses=True)
        try:
            await cluster_client.set("{orders}:total", "42")
            master = cluster.node_for_key("{orders}:total")
            [shard] = [shard for shard in cluster.shards() if shard.master is master]
            [replica] = shard.replicas
            owner = cluster_client.get_node_from_key("{orders}:total")
            assert await cluster_client.wait(1, 1000, target_nodes=owner) == 1

            master.kill()
            await wait_for(lambda: cluster.node_for_key("{orders}:total") is replica, timeout=15)

            assert await cluster_client.get("{orders}:total") == "42"
            cluster.restart(master)
            assert [s.replicas for s in cluster.shards() if s.master is replica] == [(master,)]
        finally:
            await cluster_client.aclose()
