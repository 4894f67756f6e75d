"""Operations on a partitioned stream: ``codex-bot --partitions N`` and ``PartitionedOps``, on
what the real partitioned processor left in a real redis-server."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from codex_bot.ops import (
    AmbiguousLetterError,
    DeadLetterFilter,
    OpsError,
    PartitionedOps,
    StreamNotFoundError,
)
from codex_bot.redis import partition_of, partition_stream
from codex_bot.testing.redis_server import RedisServer
from tests._bad_day import GROUP, blocked_day, cli
from tests.test_cli import one_line_error

PARTITIONS = 4
CHATS = list(range(1, 9))


def partition_of_chat(stream: str, chat: int) -> str:
    return partition_stream(stream, partition_of(chat, PARTITIONS))


async def test_stats_pending_and_a_replay_cover_every_partition(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    await blocked_day(redis, stream, CHATS, stuck=2, partitions=PARTITIONS)
    url, where = redis_server.url, ("--stream", stream, "--partitions", str(PARTITIONS))
    names = [partition_stream(stream, i) for i in range(PARTITIONS)]

    stats = (await cli(*where, "stats", "--json", url=url)).json()  # options before or after
    assert [part["stream"]["name"] for part in stats["partitions"]] == names
    for name, part in zip(names, stats["partitions"], strict=True):
        assert part["stream"]["length"] == await redis.xlen(name)
        assert part["dead_letters"]["count"] == await redis.xlen(name + ":dead")
        assert [group["name"] for group in part["groups"]] == [GROUP]
    total = stats["total"]
    assert total["stream"]["length"] == len(CHATS) + 2
    [group] = total["groups"]
    assert (group["name"], group["pending"], group["lag"]) == (GROUP, 2, 0)
    assert [(c["name"], c["pending"]) for c in group["consumers"]] == [("c1", 2)]
    assert total["dead_letters"]["count"] == len(CHATS)
    assert total["dead_letters"]["reasons"][0]["count"] == len(CHATS)
    assert total["retries"]["waiting"] == 0
    text = (await cli("stats", *where, url=url)).out
    assert f"stream {stream} in 4 partitions: 10 entries" in text
    assert text.splitlines()[2].split()[:3] == ["PARTITION", "ENTRIES", "LAG"]
    assert f"dead letters in {{{stream}:p*}}:dead: {len(CHATS)}" in text

    pending = (await cli("pending", *where, "--json", url=url)).json()
    assert sorted(entry["stream"] for entry in pending) == sorted(
        partition_of_chat(stream, 100 + n) for n in range(2)
    )
    letters = (await cli("dead", "list", *where, "--json", url=url)).json()
    by_chat = {int(letter["fields"]["chat_id"].removeprefix("json:")): letter for letter in letters}
    assert sorted(by_chat) == CHATS
    assert all(by_chat[c]["source_stream"] == partition_of_chat(stream, c) for c in CHATS)
    listed = (await cli("dead", "list", *where, url=url)).out.splitlines()
    assert listed[0].split()[:2] == ["PARTITION", "ID"]

    replay = await cli("dead", "replay", *where, "--yes", url=url)

    assert replay.code == 0, replay.err
    assert replay.out.splitlines()[-1] == f"replayed {len(CHATS)} dead letters"
    for chat in CHATS:  # each letter back on the partition it came from, once
        name = partition_of_chat(stream, chat)
        replayed = [f for _, f in await redis.xrange(name) if "codex.replayed_from" in f]
        assert by_chat[chat]["id"] in [f["codex.replayed_from"] for f in replayed]
        assert await redis.xlen(name + ":dead") == 0
    again = await cli("dead", "replay", *where, "--yes", url=url)
    assert again.out.strip() == "no dead letters match"


async def test_letters_of_all_partitions_merge_oldest_first(
    redis_server: RedisServer, redis: Redis
) -> None:
    ops = PartitionedOps(redis, "ev", 3)
    ids = {}
    for n, index in enumerate([2, 0, 1, 0, 2]):
        dead = partition_stream("ev", index) + ":dead"
        ids[n] = await redis.xadd(
            dead, {"type": f"t{n}", "codex.dead.reason": "r"}, id=f"{n + 1}-0"
        )
    await redis.xadd(partition_stream("ev", 1), {"type": "t"})

    letters = await ops.dead_letters()
    assert [letter.event_type for letter in letters] == ["t0", "t1", "t2", "t3", "t4"]
    assert letters[0].source_stream == partition_stream("ev", 2)
    assert [x.id for x in await ops.dead_letters(limit=2)] == ["1-0", "2-0"]
    assert [x.event_type for x in await ops.dead_letters(DeadLetterFilter(since_ms=3))] == [
        "t2",
        "t3",
        "t4",
    ]
    assert (await ops.dead_letter("4-0")).dead_stream == partition_stream("ev", 0) + ":dead"
    await redis.xadd(partition_stream("ev", 1) + ":dead", {"type": "x"}, id="5-0")
    with pytest.raises(AmbiguousLetterError, match="in several dead-letter streams"):
        await ops.dead_letter("5-0")
    shown = await cli(
        "dead", "show", "5-0", "--stream", "ev", "--partitions", "3", url=redis_server.url
    )
    assert one_line_error(shown) == (
        "Error: dead letter 5-0 is in several dead-letter streams ({ev:p1}:dead, {ev:p2}:dead): "
        "name its partition, e.g. --stream '{ev:p1}' without --partitions"
    )
    assert await ops.purge(DeadLetterFilter(event_type="t4")) == 1
    assert await ops.dead.count() == 5


async def test_groups_consumers_and_missing_partitions(redis: Redis) -> None:
    ops = PartitionedOps(redis, "ev", 3)
    with pytest.raises(StreamNotFoundError, match=r"\{ev:p0\} to \{ev:p2\} do not exist"):
        await ops.stats()
    first, second = partition_stream("ev", 0), partition_stream("ev", 1)
    for name in (first, second):
        await redis.xadd(name, {"type": "t"})
        await redis.xgroup_create(name, GROUP, "0")
    await redis.xreadgroup(GROUP, "busy", {first: ">"})  # holds p0's entry, idle in p1
    await redis.xgroup_createconsumer(second, GROUP, "busy")
    await redis.xgroup_createconsumer(second, GROUP, "gone")
    await redis.zadd("arq:queue", {f"codex:retry:{second}:1-0:2": 5000, "codex:retry:x:1": 1})

    stats = await ops.stats()
    assert [part.stream.length for part in stats.partitions] == [1, 1, 0]
    assert stats.partitions[2].groups == ()
    assert [part.retries.waiting for part in stats.partitions] == [0, 1, 0]
    assert (stats.total.retries.waiting, stats.total.retries.next_due_ms) == (1, 5000)
    [group] = stats.total.groups
    assert (group.pending, group.lag) == (1, 1)
    ages = [g.oldest_pending_age_ms for part in stats.partitions for g in part.groups]
    assert group.oldest_pending_age_ms == max(age for age in ages if age is not None)
    result = await ops.prune_consumers(0)
    assert (result.removed, result.kept) == (("gone",), ("busy",))
    assert [c["name"] for c in await redis.xinfo_consumers(second, GROUP)] == []
    assert [entry.stream for entry in await ops.pending()] == [first]
    with pytest.raises(OpsError, match="no consumer group 'other'"):
        await PartitionedOps(redis, "ev", 3, group="other").stats()


async def test_the_wrong_number_of_partitions_or_none_is_pointed_out(
    redis_server: RedisServer, redis: Redis
) -> None:
    for index in range(PARTITIONS):
        await redis.xadd(partition_stream("ev", index), {"type": "t"})
    url = redis_server.url

    fewer = await cli("stats", "--stream", "ev", "--partitions", "2", "--json", url=url)
    assert fewer.code == 0, fewer.err
    assert len(fewer.json()["partitions"]) == 2  # stdout stays JSON: the warning is on stderr
    assert fewer.err.strip() == (
        "warning: {ev:p2} exists too, so stream 'ev' has more than 2 partitions; the others "
        "are not shown or changed: pass the bot's number of partitions"
    )
    enough = await cli("stats", "--stream", "ev", "--partitions", str(PARTITIONS), url=url)
    assert (enough.code, enough.err) == (0, "")

    unpartitioned = await cli("dead", "list", "--stream", "ev", url=url)
    assert one_line_error(unpartitioned) == (
        "Error: stream 'ev' does not exist, but {ev:p0} does: it is partitioned, "
        "pass --partitions N"
    )
    missing = await cli("dead", "list", "--stream", "nope", url=url)
    assert one_line_error(missing) == "Error: stream 'nope' does not exist"
