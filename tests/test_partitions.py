"""Partitioned streams with leased ownership: per-chat order across replicas and failovers."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from codex_bot.redis import (
    GroupConsumer,
    RedisStreamProcessor,
    RedisStreamStorage,
    StreamProducer,
    SyncStreamProducer,
    default_ordering_key,
    partition_of,
    partition_stream,
)
from codex_bot.redis.exceptions import LeaseLostError
from codex_bot.redis.leases import LeasedStreamStorage, lease_key
from tests._helpers import Seen
from tests.conftest import blocked_clients, wait_for

REPLICA = Path(__file__).with_name("_partition_replica.py")
GROUP = "bot"


# -- names and the hash ------------------------------------------------------------------


def test_partition_names_and_the_hash_are_what_the_readme_documents():
    assert partition_stream("bot_events", 3) == "{bot_events:p3}"
    assert partition_of(42, 8) == zlib.crc32(b"42") % 8
    assert partition_of("42", 8) == partition_of(42, 8)  # hand-written "42" lands alike
    assert partition_of(-1001234567890, 8) == zlib.crc32(b"-1001234567890") % 8
    assert partition_of("Ann", 5) == zlib.crc32(b"Ann") % 5


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ({"chat_id": 7}, 7),
        ({"chat_id": "7"}, 7),  # one chat, one lane: its events never run side by side
        ({"chat_id": "-100123"}, -100123),
        ({"chat_id": "007"}, "007"),  # not how a number is written: left as it is
        ({"chat_id": "@news"}, "@news"),
        ({"user_id": "12"}, 12),
        ({"text": "no key"}, None),
    ],
)
def test_the_default_ordering_key_reads_a_numeric_chat_id_as_its_number(
    payload: dict[str, Any], key: Any
):
    assert default_ordering_key(payload) == key
    if key is not None:
        assert partition_of(default_ordering_key(payload), 8) == partition_of(
            payload.get("chat_id", payload.get("user_id")), 8
        )


def test_a_partitioned_stream_name_with_braces_is_refused(redis: Redis):
    with pytest.raises(ValueError, match="must not contain braces"):
        StreamProducer(redis, "{bot}:events", partitions=4)
    with pytest.raises(ValueError, match="must not contain braces"):
        RedisStreamProcessor(RedisStreamStorage(redis), "{bot}:events", "g", "c", partitions=4)
    with pytest.raises(ValueError, match="at least 1"):
        StreamProducer(redis, "events", partitions=0)


async def test_the_producer_writes_each_chat_to_its_partition(redis: Redis, stream: str):
    producer = StreamProducer(redis, stream, partitions=4)
    await producer.add_events([("t", {"chat_id": chat}) for chat in range(40)])
    await producer.add_event("t", {"user_id": "u-7"})
    for _ in range(8):  # no key: round the partitions
        await producer.add_event("t", {"note": "broadcast"})
    for index in range(4):
        entries = await redis.xrange(partition_stream(stream, index))
        chats = [int(f["chat_id"].removeprefix("json:")) for _, f in entries if "chat_id" in f]
        assert all(partition_of(chat, 4) == index for chat in chats)
        assert sum(1 for _, f in entries if f.get("note") == "broadcast") == 2
    assert not await redis.exists(stream)
    user_partition = partition_stream(stream, partition_of("u-7", 4))
    assert any(f.get("user_id") == "u-7" for _, f in await redis.xrange(user_partition))


def test_the_sync_producer_partitions_alike(redis_server: Any):
    import redis as sync_redis

    client = sync_redis.Redis.from_url(redis_server.url, decode_responses=True)
    try:
        client.delete(partition_stream("sync", partition_of(9, 3)))
        SyncStreamProducer(client, "sync", partitions=3).add_event("t", {"chat_id": 9})
        assert client.xlen(partition_stream("sync", partition_of(9, 3))) == 1
    finally:
        client.close()


# -- one replica -------------------------------------------------------------------------


async def test_one_replica_reads_every_partition_in_order(redis: Redis, stream: str):
    producer = StreamProducer(redis, stream, partitions=4)
    await producer.add_events(
        [("t", {"chat_id": chat, "seq": seq}) for seq in range(5) for chat in range(12)]
    )
    seen = Seen()
    processor = RedisStreamProcessor(
        RedisStreamStorage(redis), stream, GROUP, "solo", partitions=4, lease_ttl=2
    )
    processor.set_message_callback(seen)
    async with processor:
        await wait_for(lambda: len(seen.events) == 60, message="sixty events")
        assert processor.owned_partitions == [0, 1, 2, 3]
        await wait_for(lambda: processor.stats.acked == 60, message="their ACKs")
    by_chat: dict[int, list[int]] = defaultdict(list)
    for stream_name, chat, seq in seen.events:
        assert stream_name == partition_stream(stream, partition_of(chat, 4))
        by_chat[chat].append(seq)
    assert all(seqs == [0, 1, 2, 3, 4] for seqs in by_chat.values())
    assert not await redis.exists(
        *[lease_key(partition_stream(stream, i), GROUP) for i in range(4)]
    )


async def test_a_bad_entry_goes_to_its_partitions_dead_letters(redis: Redis, stream: str):
    target = partition_stream(stream, 1)
    await redis.xadd(target, {"no": "type"})
    processor = RedisStreamProcessor(
        RedisStreamStorage(redis), stream, GROUP, "solo", partitions=2, lease_ttl=2
    )
    processor.set_message_callback(Seen())
    async with processor:
        await wait_for(lambda: processor.stats.dead_lettered == 1, message="the dead letter")
    [(_, letter)] = await redis.xrange(target + ":dead")
    assert letter["codex.dead.stream"] == target


async def _held_partition(redis: Redis, stream: str) -> tuple[str, LeasedStreamStorage]:
    """Partition 0 of ``stream`` with its group, leased to "me", and "me"'s storage."""
    partition = partition_stream(stream, 0)
    lease = lease_key(partition, GROUP)
    await redis.xgroup_create(partition, GROUP, id="0", mkstream=True)
    await redis.set(lease, "me", px=10_000)
    return partition, LeasedStreamStorage(redis, lease, "me")


async def test_a_replica_that_lost_its_lease_reads_and_acks_nothing(redis: Redis, stream: str):
    partition, mine = await _held_partition(redis, stream)
    await redis.xadd(partition, {"type": "t", "n": "1"})
    [(entry_id, _)] = await mine.read_new(GroupConsumer(partition, GROUP, "me"), 10, 10)
    # a pause too long: the lease moved on
    await redis.set(mine.lease, "another replica", px=10_000)
    await redis.xadd(partition, {"type": "t", "n": "2"})
    with pytest.raises(LeaseLostError):
        await mine.read_new(GroupConsumer(partition, GROUP, "me"), 10, 10)
    with pytest.raises(LeaseLostError):
        await mine.ack_events(partition, GROUP, [entry_id])
    with pytest.raises(LeaseLostError):
        await mine.dead_letter(partition, GROUP, entry_id, partition + ":dead", [{"a": "b"}])
    assert (await redis.xpending(partition, GROUP))["pending"] == 1  # still pending for the owner
    assert await redis.xlen(partition + ":dead") == 0


async def test_a_blocked_leased_read_wakes_for_a_new_entry(redis: Redis, stream: str):
    partition, mine = await _held_partition(redis, stream)
    read = asyncio.create_task(mine.read_new(GroupConsumer(partition, GROUP, "me"), 10, 5_000))
    await wait_for(lambda: blocked_clients(redis), message="the read to block")
    entry_id = await redis.xadd(partition, {"type": "t"})
    assert [e for e, _ in await asyncio.wait_for(read, 5)] == [entry_id]


async def test_a_replica_joining_mid_send_never_sends_what_the_old_owner_still_sends(
    redis: Redis, stream: str, caplog: pytest.LogCaptureFixture
):
    # two partitions, two replicas sorted "a", "b": partition 1 is b's share once b joins
    chat = next(chat for chat in range(100) if partition_of(chat, 2) == 1)
    await StreamProducer(redis, stream, partitions=2).add_events(
        [("t", {"chat_id": chat, "seq": seq}) for seq in range(5)]
    )
    caplog.set_level(logging.INFO, logger="codex_bot.redis.processor")
    handled: list[tuple[str, int]] = []
    slow_send, sent = asyncio.Event(), asyncio.Event()

    def replica(name: str) -> RedisStreamProcessor:
        async def send(payload: dict[str, Any]) -> None:
            handled.append((name, payload["seq"]))
            if payload["seq"] == 0:  # a send paced far beyond drain_timeout
                slow_send.set()
                await sent.wait()

        processor = RedisStreamProcessor(
            RedisStreamStorage(redis), stream, GROUP, name, partitions=2, lease_ttl=1,
            drain_timeout=0.3, poll_interval=0.05,
        )  # fmt: skip
        processor.set_message_callback(send)
        return processor

    async with replica("a") as a:
        await wait_for(slow_send.is_set, message="a to send the chat's first event")
        async with replica("b") as b:
            await wait_for(
                lambda: "still running after" in caplog.text, message="a to keep partition 1"
            )
            assert handled == [("a", 0)]  # b waits: 1 to 4 wait behind 0, left for b
            assert a.owned_partitions == [0, 1]

            sent.set()
            await wait_for(lambda: len(handled) == 5, message="the rest, by b")
            await wait_for(lambda: b.stats.acked == 4, message="b's ACKs")
            assert b.owned_partitions == [1]
    assert handled == [("a", 0), ("b", 1), ("b", 2), ("b", 3), ("b", 4)]
    assert "handed partition 1 of" in caplog.text
    assert "(4 entries left pending for its next owner)" in caplog.text


# -- replicas as processes ---------------------------------------------------------------


class Replicas:
    """Replica processes of one partitioned stream (``tests/_partition_replica.py``)."""

    def __init__(self, url: str, stream: str, partitions: int, ttl: float) -> None:
        self.args = [url, stream]
        self.settings = [str(partitions), str(ttl)]
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str) -> None:
        proc = subprocess.Popen(
            [sys.executable, str(REPLICA), *self.args, name, *self.settings],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPLICA.parent.parent,
        )
        self.procs[name] = proc
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"

    def signal(self, name: str, signum: int) -> float:
        self.procs[name].send_signal(signum)
        return time.time()

    def stopped_cleanly(self, name: str) -> bool:
        proc = self.procs[name]
        proc.wait(timeout=20)
        assert proc.stdout is not None
        return proc.stdout.read() == "stopped\n"

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
            if proc.stdout is not None:
                proc.stdout.close()


async def lease_holders(redis: Redis, stream: str, partitions: int) -> list[str | None]:
    keys = [lease_key(partition_stream(stream, i), GROUP) for i in range(partitions)]
    return list(await redis.mget(keys))


async def records(redis: Redis, stream: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in await redis.lrange(stream + ":records", 0, -1)]


def first_handled_order(got: list[dict[str, Any]]) -> dict[int, list[int]]:
    """Per chat, the seqs in the order their handling first started."""
    by_chat: dict[int, list[int]] = defaultdict(list)
    for record in sorted((r for r in got if r["e"] == "start"), key=lambda r: r["t"]):
        if record["s"] not in by_chat[record["c"]]:
            by_chat[record["c"]].append(record["s"])
    return by_chat


def duplicates(got: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events whose handling started more than once, with each start."""
    starts: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for record in got:
        if record["e"] == "start":
            starts[(record["c"], record["s"])].append(record)
    return [runs for runs in starts.values() if len(runs) > 1]


def overlaps(got: list[dict[str, Any]], killed: str, killed_at: float) -> list[Any]:
    """Handlings of one partition by two replicas at once (a killed one ends at the kill)."""
    ends = {(r["r"], r["c"], r["s"]): r["t"] for r in got if r["e"] == "end"}
    spans: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for record in (r for r in got if r["e"] == "start"):
        fallback = killed_at if record["r"] == killed else record["t"]
        end = ends.get((record["r"], record["c"], record["s"]), fallback)
        spans[record["p"]].append((record["t"], end, record["r"]))
    found = []
    for partition_spans in spans.values():
        partition_spans.sort()
        last_end: dict[str, float] = {}
        for start, end, owner in partition_spans:
            if any(other != owner and start < end_ for other, end_ in last_end.items()):
                found.append((owner, start, last_end))
            last_end[owner] = max(end, last_end.get(owner, end))
    return found


@pytest.mark.redis_versions
async def test_three_replicas_keep_every_chat_in_order_through_a_kill_and_a_stop(
    fresh_server: Any, make_client: Any, stream: str
):
    partitions, ttl, chats, rounds = 6, 2.0, 50, 30
    redis = make_client(fresh_server.url, decode_responses=True)
    replicas = Replicas(fresh_server.url, stream, partitions, ttl)
    names = ["replica-a", "replica-b", "replica-c"]

    async def split() -> bool:
        holders = await lease_holders(redis, stream, partitions)
        return sorted(holders.count(name) for name in names) == [2, 2, 2]

    async def all_handled() -> bool:
        done = {(r["c"], r["s"]) for r in await records(redis, stream) if r["e"] == "end"}
        return len(done) == chats * rounds

    try:
        for name in names:
            replicas.start(name)
        await wait_for(split, message="the partitions split two by two")
        holders = await lease_holders(redis, stream, partitions)
        killed = {partition_stream(stream, i) for i, h in enumerate(holders) if h == names[0]}
        producer = StreamProducer(redis, stream, partitions=partitions)
        for seq in range(rounds):
            events = [("t", {"chat_id": chat, "seq": seq}) for chat in range(chats)]
            await producer.add_events(events)
            if seq == 10:
                killed_at = replicas.signal("replica-a", signal.SIGKILL)
            if seq == 20:
                replicas.signal("replica-b", signal.SIGTERM)
            await asyncio.sleep(0.05)  # a backend pushing over time, not a test waiting
        await wait_for(all_handled, timeout=40, message="every event handled")
        assert replicas.stopped_cleanly("replica-b")  # it drained and handed over in time
        got = await records(redis, stream)
    finally:
        replicas.close()

    order = first_handled_order(got)
    assert all(seqs == list(range(rounds)) for seqs in order.values())
    for twice in duplicates(got):  # only what the killed replica had in flight
        assert any(r["r"] == "replica-a" and r["t"] <= killed_at for r in twice), twice
    assert overlaps(got, "replica-a", killed_at) == []
    for partition in killed:  # read again within lease_ttl plus a second
        later = [r["t"] for r in got if r["p"] == partition and r["r"] != "replica-a"]
        assert min(later) - killed_at <= ttl + 1.0, (partition, min(later) - killed_at)
    for index in range(partitions):
        assert (await redis.xpending(partition_stream(stream, index), GROUP))["pending"] == 0
