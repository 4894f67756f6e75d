"""``RedisStreamStorage`` against a real redis-server, with and without decode_responses."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from codex_bot.redis import (
    GroupConsumer,
    RedisStreamStorage,
    ReliableStreamStorageProtocol,
    StreamStorageProtocol,
)
from codex_bot.redis.codec import decode_fields, text
from tests.conftest import Recorder, blocked_clients, pending_count, redis_major, wait_for

GROUP = "bot"
CLIENTS = {
    "decoded": {"decode_responses": True},
    "bytes": {"decode_responses": False},
    "resp3": {"decode_responses": True, "protocol": 3},
}


@pytest.fixture(params=list(CLIENTS))
async def client(request, redis_server, make_client) -> Redis:
    redis = make_client(redis_server.url, **CLIENTS[request.param])
    await redis.flushall()
    return redis


@pytest.fixture
def store(client) -> RedisStreamStorage:
    return RedisStreamStorage(client)


async def xadd_numbered(redis: Redis, stream: str, n: int, **fields: str) -> list[str]:
    """XADD ``n`` raw entries of type ``t`` (with ``fields``), numbered from 0; their ids."""
    return [text(await redis.xadd(stream, {"type": "t", "n": str(i), **fields})) for i in range(n)]


async def deliver(redis: Redis, stream: str, consumer: str, n: int) -> None:
    """Have ``consumer`` read ``n`` new entries and never ACK them (a consumer that died)."""
    await redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=n)


def test_implements_both_protocols(store):
    assert isinstance(store, StreamStorageProtocol)
    assert isinstance(store, ReliableStreamStorageProtocol)


async def test_group_starts_at_zero_so_earlier_events_are_read(store, client, stream):
    ids = await xadd_numbered(client, stream, 3)
    await store.create_group(stream, GROUP)
    entries = await store.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 100)
    assert [entry_id for entry_id, _ in entries] == ids
    assert decode_fields(entries[0][1]) == {"type": "t", "n": "0"}


async def test_create_group_makes_the_stream_and_is_idempotent(store, client, stream):
    await store.create_group(stream, GROUP)
    await store.create_group(stream, GROUP)
    assert await client.exists(stream) == 1
    assert await store.ensure_group(stream, "other", "0") is True
    assert await store.ensure_group(stream, "other", "0") is False
    assert len(await client.xinfo_groups(stream)) == 2


async def test_ensure_group_raises_on_a_key_that_is_no_stream(store, client, stream):
    await client.set(stream, "not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.ensure_group(stream, GROUP, "0")


async def test_group_last_delivered_id(store, client, stream):
    assert await store.group_last_delivered_id(stream, GROUP) is None
    await store.create_group(stream, GROUP)
    assert await store.group_last_delivered_id(stream, GROUP) == "0-0"
    ids = await xadd_numbered(client, stream, 2)
    await deliver(client, stream, "c1", 2)
    assert await store.group_last_delivered_id(stream, GROUP) == ids[-1]
    assert await store.group_last_delivered_id(stream, "missing") is None


async def test_read_new_blocks_for_its_timeout_then_returns_nothing(store, stream):
    await store.create_group(stream, GROUP)
    started = time.monotonic()
    assert await store.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 200) == []
    assert time.monotonic() - started >= 0.15


async def test_read_new_wakes_up_when_an_entry_arrives(store, client, stream):
    await store.create_group(stream, GROUP)
    read = asyncio.create_task(store.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 10_000))
    await wait_for(lambda: blocked_clients(client), message="the read to block on the server")
    [entry_id] = await xadd_numbered(client, stream, 1)
    entries = await asyncio.wait_for(read, 2)
    assert [e for e, _ in entries] == [entry_id]


async def test_block_is_clamped_below_the_socket_timeout(redis_server, make_client, stream):
    redis = make_client(redis_server.url, socket_timeout=0.5)
    store = RedisStreamStorage(redis)
    await store.create_group(stream, GROUP)
    started = time.monotonic()
    assert (
        await store.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 2000) == []
    )  # no TimeoutError
    assert time.monotonic() - started < 0.5
    assert await redis.ping()


async def test_a_processor_polling_longer_than_the_socket_timeout_does_not_fail(
    redis_server, make_client, make_processor, stream
):
    redis = make_client(redis_server.url, socket_timeout=0.5)
    observer = make_client(redis_server.url)
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder, poll_interval=2)
    await processor.start_listening()
    await observer.config_resetstat()

    async def empty_reads() -> bool:
        stats = await observer.info("commandstats")
        return stats.get("cmdstat_xreadgroup", {}).get("calls", 0) >= 3

    await wait_for(empty_reads, message="three timed-out reads")
    assert processor.stats.errors == 0
    assert processor.is_healthy
    await redis.xadd(stream, {"type": "t"})
    await wait_for(lambda: recorder.payloads, message="the event")


async def test_read_own_pending_returns_this_consumers_entries(store, client, stream):
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 4)
    await deliver(client, stream, "c1", 3)
    await deliver(client, stream, "c2", 1)
    await client.xdel(stream, ids[1])
    first = await store.read_own_pending(GroupConsumer(stream, GROUP, "c1"), "0-0", 2)
    assert [e for e, _ in first] == ids[:2]
    assert first[1][1] == {}  # deleted while pending: no fields
    rest = await store.read_own_pending(GroupConsumer(stream, GROUP, "c1"), ids[1], 10)
    assert [e for e, _ in rest] == [ids[2]]


async def test_claim_stale_follows_the_cursor_over_a_pel_larger_than_a_page(store, client, stream):
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 25)
    await deliver(client, stream, "dead", 25)
    claimed = await _claim_all(store, stream, page_size=10)
    assert claimed == ids
    rows = await client.xpending_range(stream, GROUP, "-", "+", 100)
    assert {text(row["consumer"]) for row in rows} == {"alive"}


async def _claim_all(store: RedisStreamStorage, stream: str, page_size: int) -> list[str]:
    claimed: list[str] = []
    cursor, pages = "0-0", 0
    while True:
        page = await store.claim_stale(GroupConsumer(stream, GROUP, "alive"), 0, cursor, page_size)
        claimed += [entry_id for entry_id, _ in page.entries]
        pages += 1
        cursor = page.next_cursor
        if cursor == "0-0":
            break
        assert pages < 100
    assert pages >= 3
    return claimed


async def test_claim_stale_respects_min_idle(store, client, stream):
    await store.create_group(stream, GROUP)
    await xadd_numbered(client, stream, 2)
    await deliver(client, stream, "dead", 2)
    page = await store.claim_stale(GroupConsumer(stream, GROUP, "alive"), 60_000, "0-0", 10)
    assert page.entries == []
    assert page.next_cursor == "0-0"


async def test_claim_stale_events_keeps_the_basic_shape(store, client, stream):
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 3)
    await deliver(client, stream, "dead", 3)
    entries = await store.claim_stale_events(stream, GROUP, "alive", 0, 2)
    assert [e for e, _ in entries] == ids[:2]
    assert decode_fields(entries[0][1]) == {"type": "t", "n": "0"}


@pytest.mark.redis_versions
@pytest.mark.parametrize("kind", list(CLIENTS))
async def test_claim_cursor_and_deleted_entries_on_each_redis_version(
    kind, fresh_server, make_client, stream
):
    client = make_client(fresh_server.url, **CLIENTS[kind])
    store = RedisStreamStorage(client)
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 25)
    await deliver(client, stream, "dead", 25)
    # idle for an hour, but ids[5]: "alive" holds it and is working on it
    await client.xclaim(stream, GROUP, "dead", 0, ids, idle=3_600_000, justid=True)
    await client.xclaim(stream, GROUP, "alive", 0, [ids[5]], justid=True)
    gone = [ids[3], ids[4], ids[9], ids[10], ids[24]]  # a run, both sides of a page, the last
    for entry_id in gone:
        await client.xdel(stream, entry_id)
    claimed: list[str] = []
    deleted: list[str] = []
    cursor = "0-0"
    while True:
        page = await store.claim_stale(GroupConsumer(stream, GROUP, "alive"), 60_000, cursor, 10)
        claimed += [entry_id for entry_id, _ in page.entries]
        deleted += page.deleted_ids
        cursor = page.next_cursor
        if cursor == "0-0":
            break

    assert claimed == [i for i in ids if i not in gone and i != ids[5]]
    assert deleted == gone  # every version names them
    if await redis_major(client) >= 7:
        # Redis 7 drops them from the PEL itself
        assert await pending_count(client, stream, GROUP) == 20
    else:
        # Redis 6.2 keeps them pending (claimed, with no fields) until they are ACKed
        assert await pending_count(client, stream, GROUP) == 25
    for entry_id in gone:
        await store.dead_letter(stream, GROUP, entry_id, stream + ":dead", [{"a": "b"}])
    assert await client.xlen(stream + ":dead") == 5
    assert await pending_count(client, stream, GROUP) == 20


async def test_delivery_counts(store, client, stream):
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 3)
    await deliver(client, stream, "c1", 3)
    await store.claim_stale(GroupConsumer(stream, GROUP, "c2"), 0, ids[1], 1)
    await store.claim_stale(GroupConsumer(stream, GROUP, "c2"), 0, ids[1], 1)
    assert await store.delivery_counts(stream, GROUP, ids) == {ids[0]: 1, ids[1]: 3, ids[2]: 1}
    await client.xack(stream, GROUP, ids[0])
    assert await store.delivery_counts(stream, GROUP, [ids[0], ids[2]]) == {ids[2]: 1}
    assert await store.delivery_counts(stream, GROUP, []) == {}


async def test_delivery_counts_pages_past_other_consumers_entries(store, client, stream):
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 250)
    await deliver(client, stream, "c1", 250)
    wanted = [ids[0], ids[249]]
    assert await store.delivery_counts(stream, GROUP, wanted) == {ids[0]: 1, ids[249]: 1}


async def test_ack_events_acknowledges_a_batch(store, client, stream):
    await store.create_group(stream, GROUP)
    ids = await xadd_numbered(client, stream, 5)
    await deliver(client, stream, "c1", 5)
    assert await store.ack_events(stream, GROUP, ids[:4]) == 4
    assert await store.ack_events(stream, GROUP, ids[:4]) == 0
    assert await store.ack_events(stream, GROUP, []) == 0
    assert await pending_count(client, stream, GROUP) == 1
    await store.ack_event(stream, GROUP, ids[4])
    assert await pending_count(client, stream, GROUP) == 0


async def test_dead_letter_writes_the_letters_and_acks(store, client, stream):
    await store.create_group(stream, GROUP)
    [entry_id] = await xadd_numbered(client, stream, 1)
    await deliver(client, stream, "c1", 1)
    letters = [{"type": "t", "codex.dead.reason": "r1"}, {"type": "t", "codex.dead.reason": "r2"}]
    await store.dead_letter(stream, GROUP, entry_id, stream + ":dead", letters)
    assert await pending_count(client, stream, GROUP) == 0
    dead = [
        {text(k): text(v) for k, v in fields.items()}
        for _, fields in await client.xrange(stream + ":dead")
    ]
    assert dead == letters


async def test_dead_letter_acks_nothing_when_the_letter_cannot_be_written(store, client, stream):
    await store.create_group(stream, GROUP)
    [entry_id] = await xadd_numbered(client, stream, 1)
    await deliver(client, stream, "c1", 1)
    await client.set(stream + ":dead", "a string, not a stream")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await store.dead_letter(stream, GROUP, entry_id, stream + ":dead", [{"a": "b"}])
    assert await pending_count(client, stream, GROUP) == 1


async def test_non_utf8_entries_do_not_fail_a_read(store, client, stream):
    await store.create_group(stream, GROUP)
    bad = text(await client.xadd(stream, {b"type": b"t", b"v": b"\xff"}))
    [good] = await xadd_numbered(client, stream, 1)
    entries = await store.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 100)
    assert [e for e, _ in entries] == [bad, good]
    assert decode_fields(entries[1][1]) == {"type": "t", "n": "0"}
    own = await store.read_own_pending(GroupConsumer(stream, GROUP, "c1"), "0-0", 10)
    assert [e for e, _ in own] == [bad, good]
    page = await store.claim_stale(GroupConsumer(stream, GROUP, "c2"), 0, "0-0", 10)
    assert [e for e, _ in page.entries] == [bad, good]
