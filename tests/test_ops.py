"""``codex_bot.ops`` on a real redis-server: replays, their atomicity, stats, pruning, parsing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from codex_bot.cli.params import parse_duration, parse_time
from codex_bot.ops import DeadLetterFilter, OpsError, StreamOps
from codex_bot.ops import stats as ops_stats
from codex_bot.ops.scripts import LUA_MAX_VALUES, Scripts
from codex_bot.testing.redis_server import RedisServer
from tests._bad_day import GROUP, bad_day

HANDLER = "app.features.notifications.handlers.send_notification"


def letter(**extra: bytes | str) -> dict[bytes | str, bytes | str]:
    """A dead letter as the processor writes it, for a retried event whose handler failed."""
    return {
        "type": "order.paid",
        "chat_id": "json:42",
        "codex.attempt": "json:3",
        "codex.handlers": f'json:["{HANDLER}"]',
        "codex.origin_id": "1700000000000-0",
        "codex.dead.reason": "gave up after 3 attempts (max_attempts=3)",
        "codex.dead.source_id": "1700000000500-0",
        "codex.dead.attempts": "3",
        "codex.dead.at": "1700000000600",
        "codex.dead.handler": HANDLER,
        "codex.dead.error": "TelegramNetworkError: timeout",
        **extra,
    }


@pytest.fixture
def raw(redis_server: RedisServer, make_client: Callable[..., Redis]) -> Redis:
    """A client without ``decode_responses``: bytes in, bytes out."""
    return make_client(redis_server.url)


async def test_a_replayed_letter_is_the_original_event_for_the_failed_handler(
    raw: Redis, redis: Redis, stream: str
) -> None:
    dead_id = await raw.xadd(stream + ":dead", letter(note="json:kept"))
    result = await StreamOps(redis, stream).replay()

    [done] = result.replayed
    assert (done.dead_id, done.stream, done.handler) == (dead_id.decode(), stream, HANDLER)
    [(entry_id, fields)] = await raw.xrange(stream)
    assert entry_id.decode() == done.entry_id
    # every codex. field goes (the attempts start afresh); the targeting and origin come back
    assert list(fields.items()) == [
        (b"type", b"order.paid"),
        (b"chat_id", b"json:42"),
        (b"note", b"json:kept"),
        (b"codex.handlers", f'json:["{HANDLER}"]'.encode()),
        (b"codex.origin_id", b"1700000000000-0"),
        (b"codex.replayed_from", dead_id),
    ]
    assert await raw.xlen(stream + ":dead") == 0
    assert (await StreamOps(redis, stream).replay()).replayed == ()


async def test_a_first_delivery_letter_takes_its_source_id_as_origin(
    raw: Redis, redis: Redis, stream: str
) -> None:
    fields = letter()
    for name in ("codex.attempt", "codex.handlers", "codex.origin_id"):
        del fields[name]
    await raw.xadd(stream + ":dead", fields)
    await StreamOps(redis, stream).replay()
    [(_, entry)] = await raw.xrange(stream)
    assert entry[b"codex.origin_id"] == b"1700000000500-0"
    assert b"codex.attempt" not in entry


async def test_a_letter_the_processor_parked_keeps_the_retrys_targets(
    raw: Redis, redis: Redis, stream: str
) -> None:
    """No handler failed (delivered too often): handlers that had succeeded stay skipped."""
    fields = letter(**{"codex.dead.reason": "delivered 11 times (max_deliveries=10)"})
    del fields["codex.dead.handler"]
    del fields["codex.dead.error"]
    await raw.xadd(stream + ":dead", fields)
    await StreamOps(redis, stream).replay()
    [(_, entry)] = await raw.xrange(stream)
    assert entry[b"codex.handlers"] == f'json:["{HANDLER}"]'.encode()


async def test_letters_go_back_to_the_stream_they_name(raw: Redis, redis: Redis) -> None:
    shared = "all:dead-letters"  # one dead-letter stream for two streams, no ":dead" suffix
    await raw.xadd(shared, letter(**{"codex.dead.stream": "billing"}))
    await raw.xadd(shared, letter())  # an older letter without codex.dead.stream
    result = await StreamOps(redis, "orders", dead_letter_stream=shared).replay()
    assert [done.stream for done in result.replayed] == ["billing", "orders"]
    assert await raw.xlen("billing") == await raw.xlen("orders") == 1


@pytest.mark.parametrize("size", [10, LUA_MAX_VALUES], ids=["lua", "transaction"])
async def test_a_letter_that_cannot_be_added_stays(
    raw: Redis, redis: Redis, stream: str, size: int
) -> None:
    await raw.set(stream, "not a stream")
    extra = {f"f{i}": "v" for i in range(size)}
    await raw.xadd(stream + ":dead", letter(**extra))
    with pytest.raises((ResponseError, OpsError), match=r"WRONGTYPE|not a stream"):
        await StreamOps(redis, stream).replay()
    assert await raw.xlen(stream + ":dead") == 1


async def test_a_letter_with_10000_fields_is_replayed_once(
    raw: Redis, redis: Redis, stream: str
) -> None:
    extra = {f"field{i}": f"value{i}" for i in range(10_000)}
    dead_id = await raw.xadd(stream + ":dead", letter(**extra))
    ops = StreamOps(redis, stream)
    [huge] = await ops.dead_letters()

    first = await ops.dead.replay_one(huge)
    again = await ops.dead.replay_one(huge)  # an interrupted run that comes back to it

    assert first.entry_id is not None
    assert again.entry_id is None
    [(_, fields)] = await raw.xrange(stream)
    assert len(fields) == 10_000 + 2 + 3
    assert fields[b"field9999"] == b"value9999"
    assert fields[b"codex.replayed_from"] == dead_id
    assert await raw.xlen(stream + ":dead") == 0


async def test_two_replays_at_once_move_each_letter_once(
    raw: Redis,
    redis: Redis,
    make_client: Callable[..., Redis],
    redis_server: RedisServer,
    stream: str,
) -> None:
    letters = [await raw.xadd(stream + ":dead", letter(n=str(n))) for n in range(60)]
    other = make_client(redis_server.url, decode_responses=True)
    first, second = await asyncio.gather(
        StreamOps(redis, stream).replay(), StreamOps(other, stream).replay()
    )
    assert len(first.replayed) + len(second.replayed) == 60
    origins = [fields[b"codex.replayed_from"] for _, fields in await raw.xrange(stream)]
    assert sorted(origins) == sorted(letters)


async def test_filters_select_letters(raw: Redis, redis: Redis, stream: str) -> None:
    dead = stream + ":dead"
    await raw.xadd(dead, letter(), id="1000-0")
    await raw.xadd(dead, letter(type="booking.confirmed"), id="2000-0")
    await raw.xadd(dead, letter(**{"codex.dead.handler": "app.other.alert"}), id="3000-0")
    ops = StreamOps(redis, stream)

    async def ids(**criteria: object) -> list[str]:
        where = DeadLetterFilter(**criteria)  # type: ignore[arg-type]
        return [found.id for found in await ops.dead_letters(where)]

    assert await ids() == ["1000-0", "2000-0", "3000-0"]
    assert await ids(event_type="booking.confirmed") == ["2000-0"]
    assert await ids(handler="send_notification") == ["1000-0", "2000-0"]
    assert await ids(handler="app.other.alert") == ["3000-0"]
    assert await ids(handler="alert") == ["3000-0"]
    assert await ids(handler="other.ale") == []
    assert await ids(reason="3 attempts") == ["1000-0", "2000-0", "3000-0"]
    assert await ids(since_ms=2000, until_ms=2000) == ["2000-0"]
    assert await ids(since_ms=1001, last_id="2000-0") == ["2000-0"]
    assert [found.id for found in await ops.dead_letters(limit=2)] == ["1000-0", "2000-0"]
    assert await ops.purge(DeadLetterFilter(event_type="order.paid")) == 2
    assert await ids() == ["2000-0"]


async def test_group_stats_count_what_no_consumer_got_yet(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    day = await bad_day(redis, redis_server.url, stream, orders=1, untyped=0, retried=0)
    for n in range(3):
        await redis.xadd(stream, {"type": "late", "n": str(n)})
    ops = StreamOps(redis, stream)

    [group] = await ops.groups()

    assert (group.name, group.lag, group.pending) == (GROUP, 3, 2)
    assert group.oldest_pending_id == day.stuck[0]
    assert [(c.name, c.pending) for c in group.consumers] == [("c1", 2)]
    assert [entry.event_type for entry in await ops.pending()] == ["report.ready"] * 2


async def test_retries_are_counted_for_their_own_stream_not_one_it_prefixes(
    redis: Redis,
) -> None:
    await redis.zadd(
        "arq:queue",
        {
            "codex:retry:bot_events:2:1700000000000-0:2": 5000,
            "codex:retry:bot_events:2:" + "ab" * 16: 7000,
            "codex:retry:bot_events:1700000000000-1:3": 9000,
        },
    )

    counts = await ops_stats.retries_by_stream(redis, "arq:queue", ["bot_events", "bot_events:2"])

    assert {name: (r.waiting, r.next_due_ms) for name, r in counts.items()} == {
        "bot_events": (1, 9000),
        "bot_events:2": (2, 5000),
    }
    only = await ops_stats.retry_queue_stats(redis, "arq:queue", "bot_events")
    assert (only.waiting, only.next_due_ms) == (1, 9000)


async def test_the_oldest_pending_age_is_its_wait_since_delivery_not_since_it_was_added(
    redis: Redis, stream: str
) -> None:
    await redis.xadd(stream, {"type": "backlog"}, id="1000-0")  # added long ago
    await redis.xgroup_create(stream, GROUP, id="0")
    await redis.xreadgroup(GROUP, "live", {stream: ">"})  # read just now
    ops = StreamOps(redis, stream)

    [fresh] = await ops.groups()

    assert fresh.oldest_pending_id == "1000-0"
    assert fresh.oldest_pending_age_ms is not None
    assert fresh.oldest_pending_age_ms < 60_000  # a backlog being drained is not stuck

    # its consumer died ten minutes ago and nobody claimed it
    await redis.xclaim(stream, GROUP, "gone", 0, ["1000-0"], idle=600_000)
    [stuck] = await ops.groups()
    assert stuck.oldest_pending_age_ms is not None
    assert 600_000 <= stuck.oldest_pending_age_ms < 660_000


async def test_a_lag_too_long_to_count_is_unknown_on_redis_6(
    redis: Redis, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        await redis.xadd(stream, {"type": "t", "n": str(n)})
    await redis.xgroup_create(stream, GROUP, "0")
    if "lag" in (await redis.xinfo_groups(stream))[0]:
        pytest.skip("Redis 7 reports the lag itself")
    monkeypatch.setattr(ops_stats, "LAG_COUNT_LIMIT", 4)
    [group] = await StreamOps(redis, stream).groups()
    assert group.lag is None
    monkeypatch.setattr(ops_stats, "LAG_COUNT_LIMIT", 5)
    [group] = await StreamOps(redis, stream).groups()
    assert group.lag == 5


async def test_pruning_never_deletes_a_consumer_that_holds_entries(
    redis: Redis, stream: str
) -> None:
    await redis.xadd(stream, {"type": "t"})
    await redis.xgroup_create(stream, GROUP, "0")
    await redis.xreadgroup(GROUP, "busy", {stream: ">"})
    await redis.xgroup_createconsumer(stream, GROUP, "idle")
    scripts = Scripts(redis)

    # what a prune that listed "busy" as idle a moment before it got entries would do
    assert not await scripts.delete_idle_consumer(stream, GROUP, b"busy", 0)
    assert not await scripts.delete_idle_consumer(stream, GROUP, b"idle", 3_600_000)
    assert await scripts.delete_idle_consumer(stream, GROUP, b"idle", 0)
    result = await StreamOps(redis, stream).prune_consumers(0)
    assert (result.removed, result.kept) == ((), ("busy",))
    assert [c["name"] for c in await redis.xinfo_consumers(stream, GROUP)] == ["busy"]


def test_durations_and_times_parse() -> None:
    assert parse_duration("30m") == 1_800_000
    assert parse_duration("1h30m") == 5_400_000
    assert parse_duration("1d") == 86_400_000
    assert parse_duration("250ms") == 250
    for bad in ("", "30", "5x", "1h 2"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    now = 1_700_000_000_000
    assert parse_time("2h", now) == now - 7_200_000
    assert parse_time("1718000000000-3", now) == 1_718_000_000_000
    assert parse_time("2024-06-10T06:13:20", now) == 1_718_000_000_000
    assert parse_time("2024-06-10T08:13:20+02:00", now) == 1_718_000_000_000
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now)
