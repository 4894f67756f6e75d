"""``StreamProducer`` and ``SyncStreamProducer`` against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis as sync_redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from codex_bot.redis import ReplicationError, StreamProducer, SyncStreamProducer
from codex_bot.redis.codec import decode_fields
from tests._helpers import run_python
from tests.conftest import command_calls, wait_for

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
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


async def test_no_wait_replicas_sends_no_wait(redis, stream):
    producer = StreamProducer(redis, stream)
    await producer.add_event("x", {})
    await producer.add_events(EVENTS)
    assert await command_calls(redis, "wait") == 0


async def test_wait_replicas_raises_when_no_replica_confirms(redis_server, make_client, stream):
    observer = make_client(redis_server.url)
    client = make_client(redis_server.url, decode_responses=True)
    await client.ping()
    producer = StreamProducer(client, stream, wait_replicas=1, wait_timeout_ms=50)
    await _server_reads(observer)
    before, waits = await _server_reads(observer), await command_calls(observer, "wait")

    with pytest.raises(ReplicationError) as caught:
        await producer.add_events(EVENTS)

    # the XADDs and one WAIT after them went in one request
    assert await _server_reads(observer) - before - 2 <= 2  # less the two INFO reads
    assert await command_calls(observer, "wait") == waits + 1
    error = caught.value
    assert (error.confirmed, error.wanted) == (0, 1)
    stored = [entry_id for entry_id, _ in await client.xrange(stream)]
    assert list(error.entry_ids) == list(error.unconfirmed_ids) == stored  # written all the same
    assert "0 of 1 replica(s) confirmed 20 of 20 event(s)" in str(error)
    with pytest.raises(ReplicationError) as single:
        await producer.add_event("x", {"chat_id": 1})
    assert single.value.entry_ids == (await client.xrevrange(stream, count=1))[0][:1]


def test_sync_wait_replicas_raises_when_no_replica_confirms(sync_client, stream):
    producer = SyncStreamProducer(sync_client, stream, wait_replicas=1, wait_timeout_ms=50)
    with pytest.raises(ReplicationError) as caught:
        producer.add_events(EVENTS[:3])
    assert [entry_id for entry_id, _ in sync_client.xrange(stream)] == list(caught.value.entry_ids)
    with pytest.raises(ReplicationError):
        producer.add_event("x", {})
    assert sync_client.xlen(stream) == 4


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"wait_replicas": -1}, "must not be negative"),
        ({"retries": -1}, "must not be negative"),
        ({"retry_backoff": -0.1}, "must not be negative"),
        ({"wait_replicas": 1, "wait_timeout_ms": 0}, "blocks forever"),
    ],
)
def test_bad_push_options_are_refused(redis, options, match):
    with pytest.raises(ValueError, match=match):
        StreamProducer(redis, **options)


async def test_a_wait_that_would_outlast_the_socket_timeout_is_refused(redis_server, make_client):
    client = make_client(redis_server.url, socket_timeout=1)
    with pytest.raises(ValueError, match="socket_timeout"):
        StreamProducer(client, wait_replicas=1, wait_timeout_ms=900)
    StreamProducer(client, wait_replicas=1, wait_timeout_ms=800)
    StreamProducer(client, wait_timeout_ms=5000)  # no WAIT, no limit


async def test_a_push_rides_out_a_redis_restart(fresh_server, make_client, stream, caplog):
    client = make_client(fresh_server.url, decode_responses=True)
    producer = StreamProducer(client, stream, retries=50, retry_backoff=0.01, retry_backoff_max=0.1)
    await producer.add_event("before", {})
    fresh_server.stop()

    push = asyncio.create_task(producer.add_events([("during", {"n": 1}), ("during", {"n": 2})]))
    await wait_for(lambda: "retrying with backoff" in caplog.text, message="a failed attempt")
    assert not push.done()
    fresh_server.start()
    ids = await push

    assert [entry_id for entry_id, _ in await client.xrange(stream)] == ids  # started empty
    assert "works again after" in caplog.text


async def test_retries_are_bounded(fresh_server, make_client, stream, caplog):
    client = make_client(fresh_server.url)
    producer = StreamProducer(client, stream, retries=3, retry_backoff=0.02, retry_backoff_max=0.04)
    fresh_server.stop()
    started = time.monotonic()
    with pytest.raises(RedisConnectionError):
        await producer.add_event("x", {})
    assert 0.02 + 0.04 + 0.04 <= time.monotonic() - started < 5
    assert caplog.text.count("retrying with backoff") == 1  # an outage is logged once


def test_sync_retries_are_bounded(fresh_server, stream):
    client = sync_redis.Redis.from_url(fresh_server.url)
    try:
        producer = SyncStreamProducer(client, stream, retries=2, retry_backoff=0.01)
        fresh_server.stop()
        with pytest.raises(RedisConnectionError):
            producer.add_events(EVENTS)
        fresh_server.start()
        assert len(producer.add_events(EVENTS)) == len(EVENTS)
    finally:
        client.close()


async def test_a_permanent_error_is_not_retried(redis, stream):
    await redis.set(stream, "not a stream")
    producer = StreamProducer(redis, stream, retries=5, retry_backoff=10)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(producer.add_events(EVENTS), timeout=5)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await asyncio.wait_for(producer.add_event("x", {}), timeout=5)


async def test_noreplicas_is_retried_until_the_primary_takes_writes_again(redis, stream, caplog):
    await redis.config_set("min-replicas-to-write", 1)  # and no replica: NOREPLICAS
    try:
        producer = StreamProducer(redis, stream, retries=50, retry_backoff=0.01)
        push = asyncio.create_task(producer.add_event("x", {}))
        await wait_for(lambda: "NOREPLICAS" in caplog.text, message="a refused attempt")
    finally:
        await redis.config_set("min-replicas-to-write", 0)
    entry_id = await push
    assert [stored for stored, _ in await redis.xrange(stream)] == [entry_id]
