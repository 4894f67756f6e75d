"""Bounded concurrency, per-key order and batched ACKs of the processor."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable
from typing import Any

import pytest

from codex_bot.redis import (
    BotRedisDispatcher,
    RedisStreamProcessor,
    RedisStreamStorage,
    StreamProducer,
)
from tests.conftest import command_calls, wait_for


def processor_on(
    storage: RedisStreamStorage, stream: str, *, consumer: str = "c1", **options: Any
) -> RedisStreamProcessor:
    """A processor (group ``bot``) over ``storage``: not started, no callback yet."""
    options.setdefault("poll_interval", 0.2)
    return RedisStreamProcessor(storage, stream, "bot", consumer, **options)


async def add_notes(redis, stream: str, events: list[dict[str, Any]]) -> None:
    """Add ``events`` as ``chat.note`` events through a producer."""
    await StreamProducer(redis, stream).add_events([("chat.note", e) for e in events])


async def test_same_chat_runs_in_stream_order_while_chats_run_in_parallel(redis, storage, stream):
    running: dict[Any, int] = defaultdict(int)
    seen: dict[Any, list[int]] = defaultdict(list)
    overlap_same_chat = 0
    peak = 0
    active = 0

    async def handler(payload: dict[str, Any]) -> None:
        nonlocal overlap_same_chat, peak, active
        chat = payload["chat_id"]
        running[chat] += 1
        active += 1
        peak = max(peak, active)
        overlap_same_chat = max(overlap_same_chat, running[chat])
        seen[chat].append(payload["seq"])
        await asyncio.sleep(0.002 * (payload["seq"] % 3))  # uneven handler times
        running[chat] -= 1
        active -= 1

    await add_notes(redis, stream, [{"chat_id": i % 20, "seq": i // 20} for i in range(400)])
    processor = processor_on(storage, stream, max_concurrency=50)
    processor.set_message_callback(handler)
    await processor.start_listening()
    await wait_for(lambda: sum(map(len, seen.values())) == 400, message="400 events")
    await processor.stop_listening()

    assert overlap_same_chat == 1
    assert all(order == list(range(20)) for order in seen.values())
    assert peak > 1  # different chats did run at the same time


async def test_ordering_key_none_runs_the_same_chat_concurrently(redis, storage, stream):
    release = asyncio.Event()
    started = 0

    async def handler(payload: dict[str, Any]) -> None:
        nonlocal started
        started += 1
        await release.wait()

    await add_notes(redis, stream, [{"chat_id": 1, "seq": i} for i in range(5)])
    processor = processor_on(storage, stream, ordering_key=None)
    processor.set_message_callback(handler)
    await processor.start_listening()
    await wait_for(lambda: started == 5, message="all five running at once")
    release.set()
    await wait_for(lambda: processor.stats.acked == 5)
    await processor.stop_listening()


async def test_callable_ordering_key(redis, storage, stream):
    order: list[tuple[str, int]] = []
    release = asyncio.Event()

    async def handler(payload: dict[str, Any]) -> None:
        if payload["seq"] == 0:
            await release.wait()
        order.append((payload["tenant"], payload["seq"]))

    events = [{"tenant": t, "seq": s, "chat_id": s} for s in range(3) for t in ("a", "b")]
    await add_notes(redis, stream, events)
    processor = processor_on(storage, stream, ordering_key=lambda p: p["tenant"])
    processor.set_message_callback(handler)
    await processor.start_listening()
    await wait_for(lambda: processor.in_flight == 6, message="all read")
    assert order == []  # both tenants wait behind their blocked first event
    release.set()
    await wait_for(lambda: len(order) == 6)
    await processor.stop_listening()
    assert [s for t, s in order if t == "a"] == [0, 1, 2]
    assert [s for t, s in order if t == "b"] == [0, 1, 2]


async def test_reading_pauses_at_max_concurrency(redis, storage, stream):
    release = asyncio.Event()
    running = 0

    async def handler(payload: dict[str, Any]) -> None:
        nonlocal running
        running += 1
        await release.wait()

    await add_notes(redis, stream, [{"chat_id": i} for i in range(200)])
    processor = processor_on(storage, stream, max_concurrency=8, batch_count=5)
    processor.set_message_callback(handler)
    await processor.start_listening()
    await wait_for(lambda: running == 8, message="eight handlers running")
    # the read loop parks on the capacity event once it stopped reading
    await wait_for(lambda: not processor._runner.capacity.is_set(), message="reading to pause")
    pending = await redis.xpending(stream, "bot")
    assert running == 8
    assert pending["pending"] == 8  # nothing beyond the limit was read from Redis
    release.set()
    await wait_for(lambda: processor.stats.acked == 200, message="all acked")
    await processor.stop_listening()
    assert (await redis.xpending(stream, "bot"))["pending"] == 0


async def test_acks_are_batched(redis, storage, stream):
    await add_notes(redis, stream, [{"chat_id": i} for i in range(500)])

    async def handler(payload: dict[str, Any]) -> None:
        await asyncio.sleep(0)

    before = await command_calls(redis, "xack")
    processor = processor_on(storage, stream)
    processor.set_message_callback(handler)
    await processor.start_listening()
    await wait_for(lambda: processor.stats.acked == 500, message="500 acked")
    await processor.stop_listening()
    calls = await command_calls(redis, "xack") - before
    assert (await redis.xpending(stream, "bot"))["pending"] == 0
    assert calls < 100, f"{calls} XACK calls for 500 entries"


async def test_dispatcher_order_holds_per_chat_through_process_message(redis, storage, stream):
    seen: list[int] = []
    dispatcher = BotRedisDispatcher()

    @dispatcher.on_message("chat.note")
    async def note(payload: dict[str, Any], container: Any) -> None:
        await asyncio.sleep(0.001 * (3 - payload["seq"] % 3))
        seen.append(payload["seq"])

    dispatcher.setup(container=None)
    await add_notes(redis, stream, [{"chat_id": 7, "seq": i} for i in range(30)])
    processor = processor_on(storage, stream)
    processor.set_message_callback(dispatcher.process_message)
    await processor.start_listening()
    await wait_for(lambda: len(seen) == 30)
    await processor.stop_listening()
    assert seen == list(range(30))


@pytest.mark.parametrize("bad", [0, -1])
def test_limits_must_be_positive(storage, stream, bad):
    with pytest.raises(ValueError, match="at least 1"):
        RedisStreamProcessor(storage, stream, "g", "c", max_concurrency=bad)


async def test_entries_held_longer_than_claim_min_idle_are_not_claimed_by_another(
    redis, storage, stream
):
    """A chat's queued events wait in this process past claim_min_idle_ms: nobody takes them."""
    gate = asyncio.Event()
    seen: list[tuple[str, int]] = []

    def recorder(name: str) -> Any:
        async def handler(payload: dict[str, Any]) -> None:
            seen.append((name, int(payload["n"])))
            if payload["n"] == 0:
                await gate.wait()  # the chat's first send is slow: the rest wait behind it

        return handler

    await add_notes(redis, stream, [{"chat_id": 1, "n": n} for n in range(5)])
    holder = processor_on(storage, stream, claim_min_idle_ms=300, consumer="holder")
    holder.set_message_callback(recorder("holder"))
    await holder.start_listening()
    await wait_for(lambda: seen == [("holder", 0)], message="the slow first send")
    claimer = processor_on(
        storage, stream, claim_min_idle_ms=300, claim_interval=0.02, consumer="claimer"
    )
    claimer.set_message_callback(recorder("claimer"))
    await claimer.start_listening()
    sweeps_before = await command_calls(redis, "xautoclaim")
    # many sweeps, well past three times claim_min_idle_ms at 20 ms each
    await wait_for(
        lambda: more_than(command_calls(redis, "xautoclaim"), sweeps_before + 50),
        message="50 sweeps",
    )
    gate.set()
    await wait_for(lambda: len(seen) == 5, message="the chat's five events")
    await wait_for(lambda: holder.stats.acked == 5, message="their ACKs")
    await claimer.stop_listening()
    await holder.stop_listening()
    assert seen == [("holder", n) for n in range(5)]  # once each, in order, by the holder
    assert (await redis.xpending(stream, "bot"))["pending"] == 0


async def more_than(count: Awaitable[int], least: int) -> bool:
    return await count > least
