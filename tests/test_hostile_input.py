"""Hostile entries: one poison entry never takes good events with it, never stays pending."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from codex_bot.redis import (
    BotRedisDispatcher,
    EntryLimits,
    MalformedEventError,
    RedisStreamProcessor,
    RedisStreamStorage,
)
from codex_bot.redis.codec import decode_fields, text
from tests.conftest import nothing_pending, pending_count, wait_for

GOOD = {"type": "t", "chat_id": "json:1"}


class GoodOrOther:
    """A callback recording each payload's ``n`` (good events) or the entry itself."""

    def __init__(self) -> None:
        self.good: list[int] = []
        self.other = 0

    async def __call__(self, payload: dict[str, Any]) -> None:
        if payload.get("good") == "yes":
            self.good.append(int(payload["n"]))
        else:
            self.other += 1


async def raw_dead_letters(redis: Redis, stream: str) -> list[dict[bytes, bytes]]:
    """The dead letters exactly as stored: names and values as bytes."""
    entries = await redis.execute_command("XRANGE", stream + ":dead", "-", "+", NEVER_DECODE=True)
    return [fields for _, fields in entries]


async def push_interleaved(redis: Redis, stream: str, hostile: list[dict[Any, Any]]) -> list[str]:
    """Good events 0..n around each hostile entry, all on one chat; the hostile entries' ids."""
    ids = []
    n = 0
    for fields in hostile:
        for _ in range(2):
            await redis.xadd(stream, {**GOOD, "good": "yes", "n": str(n)})
            n += 1
        ids.append(text(await redis.xadd(stream, fields)))
    await redis.xadd(stream, {**GOOD, "good": "yes", "n": str(n)})
    return ids


async def settle(redis: Redis, stream: str, handled: GoodOrOther, goods: int) -> None:
    await wait_for(lambda: len(handled.good) >= goods, message="every good event")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")


async def test_a_deeply_nested_json_value_takes_no_good_event_with_it(
    redis, stream, make_processor
):
    poison = {"type": "t", "chat_id": "json:1", "x": "json:" + "[" * 100_000 + "]" * 100_000}
    ids = await push_interleaved(redis, stream, [poison, poison, poison])
    handled = GoodOrOther()
    processor = make_processor(redis, stream, handled, batch_count=100)
    await processor.start_listening()
    await settle(redis, stream, handled, 7)
    assert handled.good == list(range(7))
    letters = await raw_dead_letters(redis, stream)
    assert [letter[b"codex.dead.source_id"].decode() for letter in letters] == ids
    assert b"nested deeper than 64 levels (max_depth)" in letters[0][b"codex.dead.reason"]
    assert processor.stats.failed == 0


async def test_an_entry_with_ten_thousand_fields_is_dead_lettered_whole(
    redis, stream, make_processor
):
    huge = {f"f{i}": str(i) for i in range(10_000)}
    [entry_id] = await push_interleaved(redis, stream, [huge])
    handled = GoodOrOther()
    processor = make_processor(redis, stream, handled)
    await processor.start_listening()
    await settle(redis, stream, handled, 3)
    [letter] = await raw_dead_letters(redis, stream)
    assert letter[b"codex.dead.source_id"].decode() == entry_id
    assert letter[b"codex.dead.reason"] == b"entry has 10000 fields (max_fields=1000)"
    assert {k: v for k, v in letter.items() if not k.startswith(b"codex.")} == {
        k.encode(): v.encode() for k, v in huge.items()
    }
    assert handled.good == [0, 1, 2]


async def test_a_dead_letter_keeps_bytes_that_are_not_utf8_exactly(redis, stream, make_processor):
    bad = {b"\xff\xfename": b"\xfe\xff\x00value", "type": "t"}
    [entry_id] = await push_interleaved(redis, stream, [bad])
    handled = GoodOrOther()
    processor = make_processor(redis, stream, handled)
    await processor.start_listening()
    await settle(redis, stream, handled, 3)
    [letter] = await raw_dead_letters(redis, stream)
    assert letter[b"\xff\xfename"] == b"\xfe\xff\x00value"
    assert letter[b"type"] == b"t"
    assert letter[b"codex.dead.stream"].decode() == stream
    assert b"not valid UTF-8" in letter[b"codex.dead.reason"]
    assert letter[b"codex.dead.source_id"].decode() == entry_id


async def test_a_ten_kilobyte_type_is_malformed_not_an_unknown_type(redis, stream, make_processor):
    dispatcher = BotRedisDispatcher(unknown_types="ack")
    dispatcher.setup(container=None)
    processor = make_processor(redis, stream, dispatcher.process_message)
    await redis.xadd(stream, {"type": "x" * 10_240})
    await processor.start_listening()
    await wait_for(lambda: processor.stats.dead_lettered == 1, message="the dead letter")
    [letter] = await raw_dead_letters(redis, stream)
    assert letter[b"codex.dead.reason"] == (
        b"'type' is 10240 characters long (max_type_length=256)"
    )
    assert not dispatcher.unknown_types
    assert await pending_count(redis, stream) == 0


@pytest.mark.parametrize(
    ("limits", "fields", "reason"),
    [
        (EntryLimits(max_bytes=100), {"type": "t", "text": "x" * 200}, "(max_bytes)"),
        (EntryLimits(max_fields=3), {"type": "t", "a": "1", "b": "2", "c": "3"}, "max_fields=3"),
        (EntryLimits(max_depth=2), {"type": "t", "a": "json:[[[1]]]"}, "(max_depth)"),
        (EntryLimits(max_type_length=3), {"type": "long"}, "max_type_length=3"),
    ],
    ids=["size", "fields", "depth", "type"],
)
async def test_each_bound_is_configurable_and_named(
    redis, stream, make_processor, limits, fields, reason
):
    processor = make_processor(redis, stream, GoodOrOther(), entry_limits=limits)
    await redis.xadd(stream, fields)
    await processor.start_listening()
    await wait_for(lambda: processor.stats.dead_lettered == 1, message="the dead letter")
    [letter] = await raw_dead_letters(redis, stream)
    assert reason in letter[b"codex.dead.reason"].decode()


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        EntryLimits(max_depth=0)


async def test_a_letter_that_cannot_be_written_is_parked_once_not_retried_for_ever(
    redis, stream, make_processor, caplog
):
    caplog.set_level(logging.WARNING, logger="codex_bot.redis.processor")
    await redis.set(stream + ":dead", "not a stream")  # every dead-letter write fails
    bad_id = await redis.xadd(stream, {"no": "type"})
    handled = GoodOrOther()
    processor = make_processor(
        redis, stream, handled, claim_min_idle_ms=1, claim_interval=0.01, poll_interval=0.01
    )
    await processor.start_listening()
    await wait_for(lambda: processor.stats.parked == 1, message="the entry to be parked")
    assert not processor.is_healthy
    assert list(processor.parked) == [bad_id]

    async def delivered_again(times: int) -> bool:
        rows = await redis.xpending_range(stream, "bot", "-", "+", 1)
        return bool(rows) and rows[0]["times_delivered"] >= times

    # sweeps keep finding it pending; none of them tries to write the letter again
    await wait_for(lambda: delivered_again(8), message="more sweeps")
    assert processor.stats.parked == 1
    assert processor.stats.failed == 3
    parked_lines = [r for r in caplog.records if r.getMessage().startswith("parked ")]
    assert len(parked_lines) == 1
    assert parked_lines[0].levelno == logging.ERROR
    await redis.delete(stream + ":dead")
    assert processor.release_parked() == [bad_id]
    await wait_for(lambda: processor.stats.dead_lettered == 1, message="the letter, at last")
    assert processor.is_healthy
    assert await pending_count(redis, stream) == 0


async def test_a_20_mb_entry_costs_a_few_times_its_size(redis, stream, make_processor):
    size = 20 * 1024 * 1024
    await redis.xadd(stream, {"type": "t", "blob": "x" * size})
    handled = GoodOrOther()
    limits = EntryLimits(max_bytes=64 * 1024 * 1024)
    processor = make_processor(redis, stream, handled, entry_limits=limits)
    tracemalloc.start()
    try:
        await processor.start_listening()
        await wait_for(lambda: handled.other == 1, message="the big event")
        await wait_for(lambda: processor.stats.acked == 1, message="its ACK")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * size, f"peak {peak / size:.1f} times the entry"


async def test_a_20_mb_entry_over_the_size_bound_is_parked_cheaply(redis, stream, make_processor):
    size = 20 * 1024 * 1024
    await redis.xadd(stream, {"type": "t", "blob": "x" * size})
    processor = make_processor(redis, stream, GoodOrOther())
    tracemalloc.start()
    try:
        await processor.start_listening()
        await wait_for(lambda: processor.stats.dead_lettered == 1, message="the dead letter")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * size, f"peak {peak / size:.1f} times the entry"
    assert await redis.xlen(stream + ":dead") == 1


# -- properties --------------------------------------------------------------------------

nesting = st.integers(min_value=1, max_value=5_000).map(lambda d: "json:" + "[" * d + "]" * d)
values = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40),
    st.sampled_from(["json:", "json:[", "json:NaN", "json:" + "9" * 5000, "json:{}", "json:1"]),
    nesting,
)
names = st.one_of(st.binary(min_size=1, max_size=12), st.text(min_size=1, max_size=12))
hostile_entries = st.one_of(
    st.dictionaries(names, values, min_size=1, max_size=6),
    st.dictionaries(names, values, max_size=4).map(lambda d: {**d, "type": "t"}),
    values.map(lambda v: {"type": v, "chat_id": "json:1"}),
    values.map(lambda v: {"type": "t", "chat_id": v}),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(names, values, max_size=8))
def test_decoding_anything_either_succeeds_or_says_malformed(fields):
    try:
        payload = decode_fields(fields)
    except MalformedEventError:
        return
    assert isinstance(payload, dict)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostile=st.lists(hostile_entries, min_size=1, max_size=6))
def test_good_events_survive_any_hostile_neighbours(redis_server, hostile):
    asyncio.run(_good_events_survive(redis_server.url, hostile))


async def _good_events_survive(url: str, hostile: list[dict[Any, Any]]) -> None:
    redis = Redis.from_url(url)
    stream = "hostile"
    try:
        await redis.delete(stream, stream + ":dead")
        ids = await push_interleaved(redis, stream, hostile)
        handled = GoodOrOther()
        processor = RedisStreamProcessor(
            RedisStreamStorage(redis), stream, "bot", "c1", drain_timeout=2.0
        )
        processor.set_message_callback(handled)
        async with processor:
            goods = 2 * len(hostile) + 1
            await settle(redis, stream, handled, goods)
        assert handled.good == list(range(goods))  # each once, in stream order
        dead = {
            letter[b"codex.dead.source_id"].decode()
            for letter in await raw_dead_letters(redis, stream)
        }
        assert dead <= set(ids)
        assert len(dead) + handled.other == len(ids)  # each hostile entry handled or parked
        assert await pending_count(redis, stream) == 0
    finally:
        await redis.aclose()
