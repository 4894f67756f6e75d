"""The wire format, against entries a real redis-server stores and returns."""

from __future__ import annotations

import json
import math
import tracemalloc
from typing import Any

import pytest
from redis.asyncio import Redis

from codex_bot.redis import MalformedEventError, StreamProducer
from codex_bot.redis.codec import decode_fields, encode_event
from tests.conftest import Recorder, wait_for


async def stored_fields(redis: Redis, stream: str, entry_id: str) -> dict[Any, Any]:
    [(_, fields)] = await redis.xrange(stream, entry_id, entry_id)
    return dict(fields)


@pytest.fixture(params=[True, False], ids=["decoded", "bytes"])
async def any_redis(request, redis_server, make_client) -> Redis:
    client = make_client(redis_server.url, decode_responses=request.param)
    await client.flushall()
    return client


async def test_the_readme_example_decodes_exactly(any_redis, stream):
    entry_id = await any_redis.xadd(
        stream,
        {
            "type": "order.paid",
            "chat_id": "json:42",
            "items": 'json:[{"sku":"A"}]',
            "note": "hello",
        },
    )
    assert decode_fields(await stored_fields(any_redis, stream, entry_id)) == {
        "type": "order.paid",
        "chat_id": 42,
        "items": [{"sku": "A"}],
        "note": "hello",
    }


async def test_hand_written_values_decode_to_the_strings_written(any_redis, stream):
    entry_id = await any_redis.xadd(
        stream, {"type": "booking.confirmed", "user_id": "42", "urgent": "True", "x": ""}
    )
    payload = decode_fields(await stored_fields(any_redis, stream, entry_id))
    assert payload == {"type": "booking.confirmed", "user_id": "42", "urgent": "True", "x": ""}


async def test_codex_platform_style_json_entries_decode_the_same(any_redis, stream):
    # codex_platform 0.6 writes json.dumps() with its default separators and ASCII escapes
    data = {"items": [{"sku": "A", "qty": 2}], "name": "Zoë", "meta": {"a": None, "b": 1.5}}
    legacy = {"type": "order.paid", **{k: "json:" + json.dumps(v) for k, v in data.items()}}
    ours = encode_event("order.paid", data)
    assert legacy != ours  # different spelling on the wire ...
    first = await any_redis.xadd(stream, legacy)
    second = await any_redis.xadd(stream, ours)
    decoded_legacy = decode_fields(await stored_fields(any_redis, stream, first))
    decoded_ours = decode_fields(await stored_fields(any_redis, stream, second))
    assert decoded_legacy == decoded_ours == {"type": "order.paid", **data}  # ... same event


async def test_producer_writes_the_flat_form(redis, stream):
    entry_id = await StreamProducer(redis, stream).add_event(
        "order.paid", {"chat_id": 42, "items": [{"sku": "A"}], "note": "hello", "ok": True}
    )
    assert await stored_fields(redis, stream, entry_id) == {
        "type": "order.paid",
        "chat_id": "json:42",
        "items": 'json:[{"sku":"A"}]',
        "note": "hello",
        "ok": "json:true",
    }


ROUND_TRIP = {
    "int": 42,
    "big": 2**70,
    "negative": -7,
    "float": 0.1,
    "whole_float": 1.0,
    "tiny": 5e-324,
    "true": True,
    "false": False,
    "none": None,
    "text": "plain",
    "empty": "",
    "looks_like_number": "42",
    "looks_like_bool": "True",
    "looks_like_json": "json:{not json}",
    "json_prefix_only": "json:",
    "unicode": "Zoë ✓ 日本",
    "nested": {"list": [1, 2.5, None, True, "x", {"deep": [[]]}], "empty": {}},
    "list": [],
}


@pytest.mark.parametrize("decode_responses", [True, False], ids=["decoded", "bytes"])
async def test_values_round_trip_exactly_through_producer_stream_and_processor(
    redis_server, make_client, make_processor, stream, decode_responses
):
    client = make_client(redis_server.url, decode_responses=decode_responses)
    recorder = Recorder()
    processor = make_processor(client, stream, recorder)
    await StreamProducer(client, stream).add_event("roundtrip", ROUND_TRIP)
    await processor.start_listening()
    await wait_for(lambda: recorder.payloads, message="the event")
    received = recorder.payloads[0]
    expected = {"type": "roundtrip", **ROUND_TRIP}
    assert received == expected
    # == calls True equal to 1 and 1.0 equal to 1; JSON text tells them apart
    assert json.dumps(received, sort_keys=True) == json.dumps(expected, sort_keys=True)
    assert type(received["whole_float"]) is float
    assert type(received["int"]) is int


async def test_json_prefixed_strings_are_marked_on_the_wire(redis, stream):
    entry_id = await StreamProducer(redis, stream).add_event("x", {"s": "json:42"})
    assert (await stored_fields(redis, stream, entry_id))["s"] == 'json:"json:42"'
    assert decode_fields(await stored_fields(redis, stream, entry_id))["s"] == "json:42"


async def test_invalid_json_after_the_prefix_is_malformed(any_redis, stream):
    entry_id = await any_redis.xadd(stream, {"type": "x", "v": "json:{oops"})
    with pytest.raises(MalformedEventError, match="'v' is marked json: but is not valid JSON"):
        decode_fields(await stored_fields(any_redis, stream, entry_id))


@pytest.mark.parametrize("value", ["json:NaN", "json:[Infinity]", "json:-Infinity"])
async def test_nan_and_infinity_are_not_json_on_the_way_in_either(any_redis, stream, value):
    entry_id = await any_redis.xadd(stream, {"type": "x", "v": value})
    with pytest.raises(MalformedEventError, match="is not valid JSON"):
        decode_fields(await stored_fields(any_redis, stream, entry_id))


@pytest.mark.parametrize(
    ("value", "why"),
    [("json:[1] x", "Extra data"), ("json:", "Expecting value"), ("json: [1", "Expecting")],
)
def test_what_follows_the_prefix_must_be_one_json_value(value, why):
    with pytest.raises(MalformedEventError, match=why):
        decode_fields({b"v": value.encode()})


def test_whitespace_around_a_json_value_is_allowed():
    assert decode_fields({b"v": b"json: \n[1, 2]\t "}) == {"v": [1, 2]}


def test_a_big_json_value_is_decoded_without_a_copy_of_its_text():
    text = "x" * 4_000_000
    fields = {b"v": f'json:"{text}"'.encode()}
    tracemalloc.start()
    try:
        payload = decode_fields(fields)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert payload["v"] == text
    # the decoded field and the JSON string; a slice of the field after "json:" is a third
    assert peak < 2.5 * len(text), peak


async def test_non_utf8_bytes_are_malformed(redis_server, make_client, stream):
    client = make_client(redis_server.url)  # bytes: a decoding client cannot read it at all
    entry_id = await client.xadd(stream, {b"type": b"x", b"v": b"\xff\xfe"})
    with pytest.raises(MalformedEventError, match="not valid UTF-8"):
        decode_fields(await stored_fields(client, stream, entry_id))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"codex.attempt": 2}, "reserved prefix"),
        ({"type": "other.type"}, "contradicts"),
        ({"v": math.nan}, "Out of range float"),
        ({"v": [math.inf]}, "Out of range float"),
    ],
)
async def test_producer_rejects_what_the_wire_cannot_carry(redis, stream, data, error):
    producer = StreamProducer(redis, stream)
    with pytest.raises(ValueError, match=error):
        await producer.add_event("order.paid", data)
    with pytest.raises(ValueError, match=error):
        await producer.add_events([("ok", {"n": 1}), ("order.paid", data)])
    assert await redis.xlen(stream) == 0  # a bad event in a batch sends none of it


async def test_producer_accepts_a_type_key_that_agrees(redis, stream):
    entry_id = await StreamProducer(redis, stream).add_event("a.b", {"type": "a.b", "n": 1})
    assert await stored_fields(redis, stream, entry_id) == {"type": "a.b", "n": "json:1"}


async def test_producer_rejects_non_string_keys_and_unencodable_values(redis, stream):
    producer = StreamProducer(redis, stream)
    with pytest.raises(TypeError, match="field names must be strings"):
        await producer.add_event("x", {1: "one"})
    with pytest.raises(TypeError, match="not JSON serializable"):
        await producer.add_event("x", {"when": object()})
    with pytest.raises(ValueError, match="non-empty"):
        await producer.add_event("", {})
    assert await redis.xlen(stream) == 0
