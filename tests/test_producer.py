"""``StreamProducer`` and ``SyncStreamProducer`` against a real redis-server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import redis as sync_redis

from codex_bot.redis import StreamProducer, SyncStreamProducer
from codex_bot.redis.codec import decode_fields

EVENTS = [("order.paid", {"chat_id": i, "items": [{"sku": "A", "qty": i}]}) for i in range(20)]


@pytest.fixture
def sync_client(redis_server) -> Iterator[sync_redis.Redis]:
    client = sync_redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.close()


async def test_add_event_returns_the_entry_id(redis, stream):
    entry_id = await StreamProducer(redis, stream).add_event("order.paid", {"chat_id": 7})
    [(stored_id, fields)] = await redis.xrange(stream)
    assert entry_id == stored_id
    assert decode_fields(fields) == {"type": "order.paid", "chat_id": 7}


async def test_default_stream_is_bot_events(redis):
    producer = StreamProducer(redis)
    assert producer.stream_name == "bot_events"
    await producer.add_event("x", {})
    assert await redis.xlen("bot_events") == 1


async def test_add_events_keeps_order_and_returns_every_id(redis, stream):
    ids = await StreamProducer(redis, stream).add_events(EVENTS)
    stored = await redis.xrange(stream)
    assert ids == [entry_id for entry_id, _ in stored]
    assert [decode_fields(fields) for _, fields in stored] == [
        {"type": event_type, **data} for event_type, data in EVENTS
    ]
    assert await StreamProducer(redis, stream).add_events([]) == []


async def _server_reads(redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


async def test_add_events_is_one_round_trip(redis_server, make_client, stream):
    observer = make_client(redis_server.url)
    client = make_client(redis_server.url, decode_responses=True)
    await client.ping()  # connect (and CLIENT SETINFO) before counting
    producer = StreamProducer(client, stream)
    await _server_reads(observer)
    before = await _server_reads(observer)
    await producer.add_events(EVENTS)
    batched = await _server_reads(observer) - before - 1  # the INFO read itself
    before = await _server_reads(observer)
    for event_type, data in EVENTS:
        await producer.add_event(event_type, data)
    one_by_one = await _server_reads(observer) - before - 1
    assert batched <= 2  # one request; a slow socket may split it in two reads
    assert one_by_one >= len(EVENTS)
    assert await client.xlen(stream) == 2 * len(EVENTS)


def _sync_reads(client: sync_redis.Redis) -> int:
    return int(client.info("stats")["total_reads_processed"])


def test_sync_producer_has_the_same_shape(sync_client, redis_server, stream):
    observer = sync_redis.Redis.from_url(redis_server.url)
    try:
        producer = SyncStreamProducer(sync_client, stream)
        entry_id = producer.add_event("order.paid", {"chat_id": 1, "ok": True})
        before = _sync_reads(observer)
        ids = producer.add_events(EVENTS)
        assert _sync_reads(observer) - before - 1 <= 2
    finally:
        observer.close()
    stored = sync_client.xrange(stream)
    assert [entry_id, *ids] == [e for e, _ in stored]
    assert decode_fields(stored[0][1]) == {"type": "order.paid", "chat_id": 1, "ok": True}
    assert producer.add_events([]) == []
    with pytest.raises(ValueError, match="reserved prefix"):
        producer.add_event("x", {"codex.handlers": []})


def test_sync_producer_with_a_bytes_client(redis_server, stream):
    client = sync_redis.Redis.from_url(redis_server.url)
    try:
        entry_id = SyncStreamProducer(client, stream).add_event("x", {"n": 1})
        assert isinstance(entry_id, str)
        [(stored_id, fields)] = client.xrange(stream)
        assert stored_id.decode() == entry_id
        assert decode_fields(fields) == {"type": "x", "n": 1}
    finally:
        client.close()


async def test_exact_maxlen_trims_to_maxlen(redis, stream):
    producer = StreamProducer(redis, stream, maxlen=10, approximate=False)
    await producer.add_events(EVENTS)
    last = await producer.add_event("last", {})
    assert await redis.xlen(stream) == 10
    assert (await redis.xrevrange(stream, count=1))[0][0] == last


async def test_approximate_maxlen_trims_about_maxlen(redis, stream):
    producer = StreamProducer(redis, stream, maxlen=100)
    await producer.add_events([("x", {"n": i}) for i in range(1000)])
    assert 100 <= await redis.xlen(stream) < 1000


def test_sync_maxlen(sync_client, stream):
    SyncStreamProducer(sync_client, stream, maxlen=5, approximate=False).add_events(EVENTS)
    assert sync_client.xlen(stream) == 5


def test_maxlen_must_be_positive(redis):
    with pytest.raises(ValueError, match="maxlen"):
        StreamProducer(redis, maxlen=0)


def test_producer_import_loads_neither_aiogram_nor_arq():
    code = (
        "import sys\n"
        "from codex_bot.redis import StreamProducer, SyncStreamProducer\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('aiogram', 'arq'))\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert result.stdout.strip() == ""
