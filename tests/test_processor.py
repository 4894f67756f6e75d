"""``RedisStreamProcessor`` on a real redis-server: reads, stop, recovery, ACKs, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
from redis.exceptions import ResponseError

from codex_bot.redis import (
    BotRedisDispatcher,
    RedisStreamProcessor,
    StreamProducer,
    current_event,
)
from codex_bot.redis.codec import text
from tests.conftest import Recorder, blocked_clients, nothing_pending, pending_count, wait_for


async def dead_letters(redis, stream: str) -> list[dict[str, Any]]:
    """The dead letters, read undecoded; names and values as str where they are UTF-8."""
    entries = await redis.execute_command("XRANGE", stream + ":dead", "-", "+", NEVER_DECODE=True)
    return [
        {_text_or_bytes(k): _text_or_bytes(v) for k, v in fields.items()} for _, fields in entries
    ]


def _text_or_bytes(value: bytes) -> str | bytes:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value


async def test_events_pushed_before_the_first_start_are_handled(redis, stream, make_processor):
    ids = await StreamProducer(redis, stream).add_events([("t", {"n": i}) for i in range(5)])
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder)
    await processor.start_listening()
    assert processor.is_running
    await wait_for(lambda: len(recorder.payloads) == 5, message="five events")
    assert recorder.entry_ids == ids
    assert [p["n"] for p in recorder.payloads] == [0, 1, 2, 3, 4]
    await wait_for(lambda: processor.stats.acked == 5, message="five ACKs")
    assert await pending_count(redis, stream) == 0


async def test_the_documented_example_end_to_end(redis, stream):
    from codex_bot.redis import RedisRouter, RedisStreamProcessor, RedisStreamStorage

    seen: list[tuple[str, dict[str, Any]]] = []
    router = RedisRouter()

    @router.message("booking.confirmed", filter_func=lambda p: p.get("urgent"))
    async def on_urgent(payload: dict[str, Any], container: Any) -> None:
        seen.append(("urgent", payload))

    @router.message("booking.confirmed")
    async def on_booking(payload: dict[str, Any], container: Any) -> None:
        seen.append((container, payload))

    dispatcher = BotRedisDispatcher(retry_scheduler=None)
    dispatcher.include_router(router)
    dispatcher.setup(container="the container")
    processor = RedisStreamProcessor(
        RedisStreamStorage(redis), stream, "bot_group", "bot-1", batch_count=10, poll_interval=1.0
    )
    processor.set_message_callback(dispatcher.process_message)
    producer = StreamProducer(redis, stream_name=stream)
    await producer.add_event("booking.confirmed", {"chat_id": 42, "urgent": True})
    await processor.start_listening()
    try:
        await producer.add_event("booking.confirmed", {"chat_id": 43, "urgent": False})
        await wait_for(lambda: len(seen) == 3, message="three handler calls")
        await wait_for(lambda: processor.stats.acked == 2, message="two ACKs")
    finally:
        await processor.stop_listening()
    assert seen == [
        ("urgent", {"type": "booking.confirmed", "chat_id": 42, "urgent": True}),
        ("the container", {"type": "booking.confirmed", "chat_id": 42, "urgent": True}),
        ("the container", {"type": "booking.confirmed", "chat_id": 43, "urgent": False}),
    ]
    assert await pending_count(redis, stream, "bot_group") == 0


async def test_an_event_in_an_idle_stream_is_handled_within_milliseconds(
    redis, stream, make_processor
):
    arrived: list[float] = []

    async def handler(payload: dict[str, Any]) -> None:
        arrived.append(time.monotonic())

    processor = make_processor(redis, stream, handler, poll_interval=5)
    await processor.start_listening()
    await wait_for(lambda: blocked_clients(redis), message="the read to block on the server")
    pushed = time.monotonic()
    await redis.xadd(stream, {"type": "t"})
    await wait_for(lambda: arrived, message="the event")
    assert arrived[0] - pushed < 0.1


async def test_stop_returns_promptly_while_a_read_is_blocked(redis, stream, make_processor):
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder, poll_interval=30)
    await processor.start_listening()
    await wait_for(lambda: blocked_clients(redis), message="the read to block on the server")
    started = time.monotonic()
    await processor.stop_listening()
    assert time.monotonic() - started < 1
    assert not processor.is_running
    await processor.stop_listening()  # idempotent
    # the cancelled XREADGROUP must not leave a connection that answers the wrong reply
    assert await redis.ping()
    entry_id = await redis.xadd(stream, {"type": "t"})
    assert [e for e, _ in await redis.xrange(stream)] == [entry_id]
    assert await pending_count(redis, stream) == 0
    await processor.start_listening()  # and the processor starts again on the same client
    await wait_for(lambda: recorder.entry_ids == [entry_id], message="the event after restart")
    await wait_for(lambda: processor.stats.acked == 1, message="its ACK")


async def test_stop_lets_an_in_flight_handler_finish_and_acks_it(redis, stream, make_processor):
    release = asyncio.Event()
    finished: list[str] = []

    async def handler(payload: dict[str, Any]) -> None:
        await release.wait()
        finished.append(payload["type"])

    processor = make_processor(redis, stream, handler, drain_timeout=5)
    await processor.start_listening()
    await redis.xadd(stream, {"type": "slow"})
    await wait_for(lambda: processor.in_flight == 1, message="the handler to start")
    stopping = asyncio.create_task(processor.stop_listening())
    await wait_for(lambda: not processor.is_running, message="stop to begin")
    assert not stopping.done()
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == ["slow"]
    assert processor.stats.acked == 1
    assert await pending_count(redis, stream) == 0
    # nothing left pending: the consumer leaves the group rather than stay behind for good
    assert await redis.xinfo_consumers(stream, "bot") == []
    assert await redis.xinfo_groups(stream)  # the group itself stays


async def test_drain_timeout_leaves_an_unfinished_entry_pending(redis, stream, make_processor):
    cancelled: list[bool] = []

    async def handler(payload: dict[str, Any]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    processor = make_processor(redis, stream, handler, drain_timeout=0.1)
    await processor.start_listening()
    entry_id = await redis.xadd(stream, {"type": "stuck"})
    await wait_for(lambda: processor.in_flight == 1, message="the handler to start")
    await processor.stop_listening()
    assert cancelled == [True]
    assert processor.in_flight == 0
    rows = await redis.xpending_range(stream, "bot", "-", "+", 10)
    assert [(row["message_id"], row["consumer"]) for row in rows] == [(entry_id, "c1")]
    # the consumer still holds the entry, so it stays in the group
    assert [c["name"] for c in await redis.xinfo_consumers(stream, "bot")] == ["c1"]


async def test_own_pending_entries_are_handled_first_at_start(redis, stream, make_processor):
    producer = StreamProducer(redis, stream)
    await redis.xgroup_create(stream, "bot", id="0", mkstream=True)
    crashed = await producer.add_events([("t", {"n": i}) for i in range(3)])
    await redis.xreadgroup("bot", "c1", {stream: ">"}, count=3)  # read, then the process died
    fresh = await producer.add_events([("t", {"n": i}) for i in range(3, 6)])
    recorder = Recorder()
    processor = make_processor(
        redis, stream, recorder, max_concurrency=1, claim_min_idle_ms=3_600_000
    )
    await processor.start_listening()
    await wait_for(lambda: len(recorder.entry_ids) == 6, message="six events")
    assert recorder.entry_ids == crashed + fresh
    await wait_for(lambda: processor.stats.acked == 6, message="six ACKs")
    assert await pending_count(redis, stream) == 0


@pytest.mark.redis_versions
async def test_claim_sweep_takes_a_dead_consumers_whole_pel(redis, stream, make_processor):
    await redis.xgroup_create(stream, "bot", id="0", mkstream=True)
    ids = await StreamProducer(redis, stream).add_events([("t", {"n": i}) for i in range(120)])
    await redis.xreadgroup("bot", "dead", {stream: ">"}, count=120)
    # idle for a minute already: the one sweep at start must find them all
    await redis.xclaim(stream, "bot", "dead", 0, ids, idle=60_000, justid=True)
    recorder = Recorder()
    # pages hold at most max_concurrency entries, so 120 take several; one sweep only
    processor = make_processor(
        redis, stream, recorder, max_concurrency=16, claim_min_idle_ms=1000, claim_interval=3600
    )
    await processor.start_listening()
    await wait_for(lambda: len(recorder.entry_ids) == 120, message="every stale entry")
    assert set(recorder.entry_ids) == set(ids)
    await wait_for(lambda: processor.stats.acked == 120, message="120 ACKs")
    assert await pending_count(redis, stream) == 0
    assert await redis.xlen(stream + ":dead") == 0


async def test_a_failing_entry_stays_pending_then_is_dead_lettered(redis, stream, make_processor):
    gate = asyncio.Event()
    calls: list[int] = []

    async def handler(payload: dict[str, Any]) -> None:
        event = current_event()
        assert event is not None
        calls.append(event.deliveries)
        if event.deliveries > 1:
            await gate.wait()
        raise RuntimeError("boom")

    fields = {"type": "order.paid", "chat_id": "json:42", "note": "hello"}
    entry_id = await redis.xadd(stream, fields)
    processor = make_processor(
        redis, stream, handler, claim_min_idle_ms=20, claim_interval=0.02, max_deliveries=3
    )
    await processor.start_listening()
    await wait_for(lambda: processor.stats.failed == 1, message="the first failure")
    assert await pending_count(redis, stream) == 1  # not ACKed
    assert processor.stats.acked == 0
    gate.set()
    await wait_for(lambda: dead_letters(redis, stream), message="the dead letter")
    assert calls == [1, 2, 3]  # the 4th delivery is over max_deliveries: not handled again
    [letter] = await dead_letters(redis, stream)
    assert {k: letter[k] for k in fields} == fields
    assert letter["codex.dead.source_id"] == entry_id
    assert letter["codex.dead.reason"] == "delivered 4 times (max_deliveries=3)"
    assert letter["codex.dead.attempts"] == "4"
    assert await pending_count(redis, stream) == 0
    assert processor.stats.dead_lettered == 1


async def test_process_message_before_setup_acks_nothing(redis, stream, make_processor):
    dispatcher = BotRedisDispatcher()
    handled: list[dict[str, Any]] = []

    @dispatcher.on_message("t")
    async def handler(payload: dict[str, Any], container: Any) -> None:
        handled.append(payload)

    processor = make_processor(redis, stream, dispatcher.process_message)
    await processor.start_listening()
    entry_id = await redis.xadd(stream, {"type": "t"})
    await wait_for(lambda: processor.stats.failed == 1, message="the refused event")
    assert handled == []
    assert processor.stats.acked == 0
    rows = await redis.xpending_range(stream, "bot", "-", "+", 10)
    assert [row["message_id"] for row in rows] == [entry_id]
    assert await redis.xlen(stream + ":dead") == 0


async def test_the_processor_passes_its_stream_name(redis, stream, make_processor):
    seen: list[tuple[str, str]] = []

    async def with_stream(payload: dict[str, Any], stream_name: str = "bot_events") -> None:
        seen.append((payload["type"], stream_name))

    async def with_kwargs(payload: dict[str, Any], **kwargs: Any) -> None:
        seen.append((payload["type"], kwargs["stream_name"]))

    async def one_arg(payload: dict[str, Any]) -> None:
        seen.append((payload["type"], "-"))

    await redis.xadd(stream, {"type": "t"})
    for i, callback in enumerate([with_stream, with_kwargs, one_arg]):
        processor = make_processor(redis, stream, callback, group=f"g{i}")
        await processor.start_listening()
        await wait_for(lambda i=i: len(seen) == i + 1, message=callback.__name__)
        await processor.stop_listening()
    assert seen == [("t", stream), ("t", stream), ("t", "-")]


async def test_dispatcher_retries_go_to_the_stream_the_event_came_from(
    redis, stream, make_processor
):
    scheduled: list[str] = []

    class Scheduler:
        async def schedule_retry(self, stream_name: str, payload: dict, delay: int = 60) -> None:
            scheduled.append(stream_name)

    dispatcher = BotRedisDispatcher(retry_scheduler=Scheduler(), retry_delay=0.01)

    @dispatcher.on_message("t")
    async def handler(payload: dict[str, Any], container: Any) -> None:
        raise RuntimeError("boom")

    dispatcher.setup(container=None)
    processor = make_processor(redis, stream, dispatcher.process_message)
    await processor.start_listening()
    await redis.xadd(stream, {"type": "t"})
    await wait_for(lambda: processor.stats.acked == 1, message="the handed-over event's ACK")
    assert scheduled == [stream]
    assert await pending_count(redis, stream) == 0


@pytest.mark.parametrize("decode_responses", [True, False], ids=["decoded", "bytes"])
async def test_malformed_entries_are_dead_lettered_and_the_processor_goes_on(
    redis_server, make_client, make_processor, stream, decode_responses
):
    client = make_client(redis_server.url, decode_responses=decode_responses)
    await client.flushall()
    bad = {
        "no type": {"chat_id": "42"},
        "bad json": {"type": "t", "items": "json:[oops"},
        "type not a string": {"type": "json:42"},
        "not utf-8": {"type": "t", "v": b"\xff\xfe"},
    }
    bad_ids = {reason: text(await client.xadd(stream, fields)) for reason, fields in bad.items()}
    good_id = text(await client.xadd(stream, {"type": "t", "n": "1"}))
    recorder = Recorder()
    processor = make_processor(client, stream, recorder)
    await processor.start_listening()
    await wait_for(lambda: recorder.entry_ids == [good_id], message="the good event")
    await wait_for(lambda: processor.stats.acked == 1, message="its ACK")
    letters = {
        letter["codex.dead.source_id"]: letter for letter in await dead_letters(client, stream)
    }
    assert set(letters) == set(bad_ids.values())
    no_type = letters[bad_ids["no type"]]
    assert no_type["chat_id"] == "42"
    assert "no 'type'" in no_type["codex.dead.reason"]
    bad_json = letters[bad_ids["bad json"]]
    assert bad_json["items"] == "json:[oops"
    assert "'items' is marked json: but is not valid JSON" in bad_json["codex.dead.reason"]
    assert "no 'type'" in letters[bad_ids["type not a string"]]["codex.dead.reason"]
    not_utf8 = letters[bad_ids["not utf-8"]]
    assert "not valid UTF-8" in not_utf8["codex.dead.reason"]
    assert not_utf8["v"] == b"\xff\xfe"  # the original bytes, for a replay
    assert await pending_count(client, stream) == 0
    assert processor.stats.dead_lettered == 4


async def test_unknown_types_are_dead_lettered_by_default(redis, stream, make_processor):
    dispatcher = BotRedisDispatcher()
    dispatcher.setup(container=None)
    processor = make_processor(redis, stream, dispatcher.process_message)
    await processor.start_listening()
    ids = await StreamProducer(redis, stream).add_events(
        [("notification.create", {"chat_id": 1, "text": "a typo"})] * 2
    )
    await wait_for(lambda: processor.stats.dead_lettered == 2, message="two dead letters")
    letters = await dead_letters(redis, stream)
    assert [letter["codex.dead.source_id"] for letter in letters] == ids
    assert letters[0]["codex.dead.reason"] == "no handler for type 'notification.create'"
    assert letters[0]["text"] == "a typo"
    assert "codex.dead.handler" not in letters[0]
    assert dispatcher.unknown_types == {"notification.create": 2}
    assert await pending_count(redis, stream) == 0


async def test_unknown_types_ack_acknowledges_and_counts(redis, stream, make_processor):
    dispatcher = BotRedisDispatcher(unknown_types="ack")
    dispatcher.setup(container=None)
    processor = make_processor(redis, stream, dispatcher.process_message)
    await processor.start_listening()
    await StreamProducer(redis, stream).add_events([("nobody.listens", {})] * 3)
    await wait_for(lambda: processor.stats.acked == 3, message="three ACKs")
    assert dispatcher.unknown_types == {"nobody.listens": 3}
    assert await pending_count(redis, stream) == 0
    assert await redis.xlen(stream + ":dead") == 0


@pytest.mark.redis_versions
async def test_an_entry_deleted_while_pending_is_dead_lettered(redis, stream, make_processor):
    await redis.xgroup_create(stream, "bot", id="0", mkstream=True)
    [gone, kept] = await StreamProducer(redis, stream).add_events([("t", {}), ("t", {})])
    await redis.xreadgroup("bot", "c1", {stream: ">"}, count=2)
    await redis.xdel(stream, gone)
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder)
    await processor.start_listening()
    await wait_for(lambda: recorder.entry_ids == [kept], message="the kept entry")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    [letter] = await dead_letters(redis, stream)
    assert letter["codex.dead.source_id"] == gone
    assert letter["codex.dead.reason"] == "entry was deleted from the stream before it was handled"


@pytest.mark.redis_versions
async def test_a_dead_consumers_entry_deleted_while_pending_is_dead_lettered(
    redis, stream, make_processor
):
    await redis.xgroup_create(stream, "bot", id="0", mkstream=True)
    ids = await StreamProducer(redis, stream).add_events([("t", {"n": i}) for i in range(3)])
    await redis.xreadgroup("bot", "dead", {stream: ">"}, count=3)
    await redis.xdel(stream, ids[1])
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder, claim_min_idle_ms=0, claim_interval=3600)
    await processor.start_listening()
    await wait_for(lambda: sorted(recorder.entry_ids) == [ids[0], ids[2]], message="the others")
    await wait_for(lambda: nothing_pending(redis, stream), message="nothing pending")
    [letter] = await dead_letters(redis, stream)
    assert letter["codex.dead.source_id"] == ids[1]
    assert letter["codex.dead.reason"] == "entry was deleted from the stream before it was handled"


async def test_start_needs_a_callback(redis, stream):
    from codex_bot.redis import CodexBotError, RedisStreamProcessor, RedisStreamStorage

    processor = RedisStreamProcessor(RedisStreamStorage(redis), stream, "bot", "c1")
    with pytest.raises(CodexBotError, match="set_message_callback"):
        await processor.start_listening()
    assert not processor.is_running


async def test_stop_never_hangs_with_a_socket_timeout_client(
    redis_server, make_client, make_processor, stream
):
    # redis-py wraps each command in asyncio.wait_for when socket_timeout is set; on 3.11
    # that can swallow the cancellation of the ACK task when stop lands mid-XACK
    client = make_client(redis_server.url, socket_timeout=10)
    for round_ in range(10):
        handled: list[str] = []

        async def handler(payload: dict[str, Any], into: list[str] = handled) -> None:
            await asyncio.sleep(int(payload["n"]) % 7 / 1000)
            into.append(payload["n"])

        processor = make_processor(client, stream, handler, consumer=f"c{round_}")
        await StreamProducer(client, stream).add_events([("t", {"n": str(n)}) for n in range(60)])
        await processor.start_listening()
        await wait_for(lambda into=handled: into, message="the first handled")
        started = time.monotonic()
        await processor.stop_listening()  # while handlers finish and their ACKs flow
        assert time.monotonic() - started < 2, f"stop took too long in round {round_}"
        assert not processor.is_running


async def test_an_unhashable_ordering_key_is_dead_lettered_and_stalls_nothing(
    redis, stream, make_processor
):
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder, max_concurrency=2)
    await redis.xadd(stream, {"type": "t", "chat_id": 'json:[1,"x"]'})
    await redis.xadd(stream, {"type": "t", "chat_id": 'json:{"a":1}'})
    good = [
        await redis.xadd(stream, {"type": "t", "chat_id": f"json:{chat}"}) for chat in (7, 8, 9)
    ]
    await processor.start_listening()
    await wait_for(lambda: recorder.entry_ids == good, message="the three good events")
    await wait_for(lambda: processor.stats.acked == 3, message="their ACKs")
    letters = await dead_letters(redis, stream)
    assert [letter["chat_id"] for letter in letters] == ['json:[1,"x"]', 'json:{"a":1}']
    assert all("the ordering key failed" in letter["codex.dead.reason"] for letter in letters)
    assert await nothing_pending(redis, stream)
    assert processor.in_flight == 0


async def test_a_dead_letter_that_cannot_be_written_does_not_hold_back_good_entries(
    redis, stream, make_processor
):
    recorder = Recorder()
    await redis.set(stream + ":dead", "not a stream")  # every dead-letter write fails
    await redis.xadd(stream, {"no": "type"})
    good = [await redis.xadd(stream, {"type": "t", "n": str(n)}) for n in range(3)]
    processor = make_processor(redis, stream, recorder)
    await processor.start_listening()
    await wait_for(lambda: recorder.entry_ids == good, message="the good entries")
    await wait_for(lambda: processor.stats.acked == 3, message="their ACKs")
    # the bad entry could not be parked, so it stays pending rather than being dropped
    assert await pending_count(redis, stream) == 1


class ThreeMethodAdapter:
    """A project's own adapter with three methods and no claim_stale_events (codex-bot 0.4.0's)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def create_group(self, stream: str, group: str) -> None:
        with contextlib.suppress(ResponseError):
            await self.redis.xgroup_create(stream, group, id="0", mkstream=True)

    async def read_events(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        result = await self.redis.xreadgroup(
            group_name, consumer_name, {stream_name: ">"}, count=count
        )
        return [(msg_id, data) for _, messages in result or [] for msg_id, data in messages]

    async def ack_event(self, stream_name: str, group_name: str, message_id: str) -> None:
        await self.redis.xack(stream_name, group_name, message_id)


async def test_a_three_method_adapter_works_without_errors(redis, stream):
    recorder = Recorder()
    processor = RedisStreamProcessor(
        ThreeMethodAdapter(redis),  # type: ignore[arg-type]
        stream,
        "bot",
        "c1",
        poll_interval=0.01,
        claim_interval=0.01,
    )
    processor.set_message_callback(recorder)
    await processor.start_listening()
    ids = [await redis.xadd(stream, {"type": "t", "n": str(n)}) for n in range(3)]
    await wait_for(lambda: recorder.entry_ids == ids, message="three handled")
    await wait_for(lambda: processor.stats.acked == 3, message="three acked")
    await processor.stop_listening()
    assert processor.stats.errors == 0


async def test_start_id_dollar_makes_a_new_group_skip_what_the_stream_holds(
    redis, stream, make_processor
):
    await redis.xadd(stream, {"type": "t", "n": "old"})
    recorder = Recorder()
    processor = make_processor(redis, stream, recorder, start_id="$")
    await processor.start_listening()
    await wait_for(lambda: processor.is_healthy, message="the group")
    new = await redis.xadd(stream, {"type": "t", "n": "new"})
    await wait_for(lambda: recorder.entry_ids == [new], message="only the new event")
    assert [p["n"] for p in recorder.payloads] == ["new"]
