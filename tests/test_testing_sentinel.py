"""RedisSentinelServer: Sentinels fail a primary over to its replica; redis-py's client follows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from codex_bot.testing import RedisSentinelServer, ServerProcess
from tests._helpers import OWN_SERVERS_ONLY, sentinels
from tests.conftest import wait_for

pytestmark = [
    pytest.mark.sentinel,
    OWN_SERVERS_ONLY,
]


@pytest.fixture
async def master(sentinel: RedisSentinelServer) -> AsyncIterator[Redis]:
    """A client of whichever node the Sentinels name the primary, as an app would use."""
    sentinel.wait_until_ready()
    with sentinel.primary().client() as redis:
        redis.flushall()
    async with sentinels(sentinel.sentinel_addresses) as client:
        redis = client.master_for(sentinel.master_name, decode_responses=True, socket_timeout=2)
        yield redis
        await redis.aclose()


def value_on(node: ServerProcess, key: str) -> str | None:
    with node.client() as redis:
        return redis.get(key)


async def get_once_reconnected(redis: Redis, key: str) -> str | None:
    """GET, again if the first try meets the connection that died with the old primary."""
    try:
        return await redis.get(key)
    except RedisConnectionError:
        return await redis.get(key)


def test_a_fresh_set_up_has_its_replica_confirm_writes_at_once() -> None:
    # started, its replica has acknowledged the primary's offset: WAIT needs no warm-up
    with RedisSentinelServer() as fresh, fresh.primary().client() as redis:
        redis.set("first", "1")
        assert redis.wait(1, 200) == 1


async def test_the_replica_copies_what_master_for_writes(
    sentinel: RedisSentinelServer, master: Redis
) -> None:
    await master.set("greeting", "hello")

    [replica] = sentinel.replicas()
    await wait_for(lambda: value_on(replica, "greeting") == "hello", message="replication")
    async with sentinels(sentinel.sentinel_addresses) as client:
        discovered = await client.discover_master(sentinel.master_name)
    assert discovered == sentinel.primary().address


async def test_failover_promotes_the_replica_and_master_for_follows(
    sentinel: RedisSentinelServer, master: Redis
) -> None:
    old = sentinel.primary()
    await master.set("before", "1")
    await wait_for(lambda: value_on(sentinel.replicas()[0], "before") == "1")

    new = sentinel.failover()

    assert new is not old
    assert sentinel.replicas() == [old]
    # The client's pooled connection still points at the demoted node: redis-py turns its
    # READONLY into one ConnectionError, then reconnects through the Sentinels.
    with pytest.raises(RedisConnectionError, match="now a slave"):
        await master.set("after", "2")
    await master.set("after", "2")
    assert value_on(new, "after") == "2"
    assert value_on(new, "before") == "1"
    sentinel.wait_until_ready()


async def test_a_killed_primary_fails_over_to_the_replica(
    sentinel: RedisSentinelServer, master: Redis
) -> None:
    old = sentinel.primary()
    await master.set("before", "1")
    await wait_for(lambda: value_on(sentinel.replicas()[0], "before") == "1")

    old.kill()
    new = sentinel.wait_for_failover(old, timeout=15)

    assert new is not old
    assert await get_once_reconnected(master, "before") == "1"
    sentinel.restart(old)  # back as a replica of the new primary
    assert sentinel.primary() is new
    assert sentinel.replicas() == [old]


async def test_a_write_the_replica_missed_is_lost_in_a_failover(
    sentinel: RedisSentinelServer, master: Redis
) -> None:
    old, [replica] = sentinel.primary(), sentinel.replicas()
    await master.set("replicated", "1")
    assert await master.wait(1, 1000) == 1

    sentinel.pause_replication(replica)
    await master.set("acknowledged", "1")  # the primary says OK...
    assert await master.wait(1, 100) == 0  # ...but no replica has it
    old.kill()
    new = sentinel.wait_for_failover(old, timeout=15)

    assert new is replica
    assert value_on(new, "replicated") == "1"
    assert value_on(new, "acknowledged") is None
    sentinel.resume_replication(new)
    sentinel.restart(old)


async def test_three_sentinels_agree_on_a_failover() -> None:
    with RedisSentinelServer(sentinels=3) as setup:
        old = setup.primary()

        new = setup.failover()

        for address in setup.sentinel_addresses:
            async with sentinels([address]) as client:
                found = await client.discover_master(setup.master_name)
            assert found == new.address != old.address
