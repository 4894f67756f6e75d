"""The installed ``codex-bot --cluster`` and the metrics' Redis figures on a real 3-master Redis
Cluster, against what the real processor left behind: pending entries and dead letters (one
with more than 4,000 fields) on a hash-tagged stream, and on a partitioned one."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from redis import Redis

from codex_bot.metrics import instrument
from codex_bot.redis import RedisStreamProcessor, RedisStreamStorage, partition_stream
from codex_bot.testing import RedisClusterServer
from codex_bot.testing.redis_server import free_port
from tests._bad_day import CODEX_BOT, GROUP, blocked_day, cli
from tests._helpers import OWN_SERVERS_ONLY
from tests.conftest import wait_for
from tests.test_cli import PASSWORD, one_line_error
from tests.test_metrics import parse, value

pytestmark = [
    pytest.mark.cluster,
    OWN_SERVERS_ONLY,
]

STREAM = "{bot}:events"
DEAD = STREAM + ":dead"
HUGE = {"type": "report.ready", **{f"f{i}": "v" for i in range(4_500)}}
"""An entry beyond ``max_fields``: the processor dead-letters it, every field kept."""


def codex_bot(*args: str) -> list[str]:
    return [*args, "--cluster", "--stream", STREAM]


async def test_stats_pending_dead_letters_and_a_replay(
    cluster: RedisClusterServer, cluster_client: Any
) -> None:
    await blocked_day(cluster_client, STREAM, [1, 2, 3], stuck=2, extra=[HUGE])
    url = cluster.url

    stats = (await cli(*codex_bot("stats", "--json"), url=url)).json()
    assert stats["stream"]["length"] == 3 + 2 + 1
    [group] = stats["groups"]
    assert (group["name"], group["pending"], group["lag"]) == (GROUP, 2, 0)
    assert stats["dead_letters"]["count"] == 4
    assert stats["retries"] is None  # arq runs on one Redis, not on the cluster
    text = await cli(*codex_bot("stats"), url=url)
    assert "dead letters in {bot}:events:dead: 4" in text.out
    assert "retries in arq: not looked up" in text.out
    pending = (await cli(*codex_bot("pending", "--json"), url=url)).json()
    assert [(p["consumer"], p["event_type"]) for p in pending] == [("c1", "report.ready")] * 2
    letters = (await cli(*codex_bot("dead", "list", "--json"), url=url)).json()
    assert len(letters) == 4
    [huge] = [letter for letter in letters if letter["reason"].startswith("entry has 4501 fields")]

    replay = await cli(*codex_bot("dead", "replay", "--yes"), url=url)

    assert replay.code == 0, replay.err
    assert replay.out.splitlines()[-1] == "replayed 4 dead letters"
    assert await cluster_client.xlen(DEAD) == 0
    found = await cluster_client.xrange(STREAM)
    replayed = {f["codex.replayed_from"]: f for _, f in found if "codex.replayed_from" in f}
    assert sorted(replayed) == sorted(letter["id"] for letter in letters)
    assert len(replayed[huge["id"]]) == len(HUGE) + 2  # the fields, origin and replayed_from


async def test_an_interrupted_replay_run_again_duplicates_nothing(
    cluster: RedisClusterServer, cluster_client: Any
) -> None:
    await blocked_day(cluster_client, STREAM, list(range(30)), extra=[HUGE])
    letters = [letter_id for letter_id, _ in await cluster_client.xrange(DEAD)]
    replay = [str(CODEX_BOT), *codex_bot("dead", "replay", "--yes")]

    process = await asyncio.create_subprocess_exec(
        *replay, "--rate", "20", env={**os.environ, "REDIS_URL": cluster.url}
    )
    await wait_for(lambda: _fewer_than(cluster_client, 27), message="a few letters replayed")
    process.send_signal(signal.SIGKILL)
    await process.wait()
    left = await cluster_client.xlen(DEAD)
    assert 0 < left < 31

    again = await cli(*codex_bot("dead", "replay", "--yes"), url=cluster.url)
    assert again.code == 0, again.err
    assert again.out.splitlines()[-1] == f"replayed {left} dead letters"

    replayed = [f.get("codex.replayed_from") for _, f in await cluster_client.xrange(STREAM)]
    assert sorted(filter(None, replayed)) == sorted(letters)
    assert await cluster_client.xlen(DEAD) == 0


async def _fewer_than(client: Any, count: int) -> bool:
    return bool(await client.xlen(DEAD) < count)


async def test_a_partitioned_stream_on_the_cluster(
    cluster: RedisClusterServer, cluster_client: Any
) -> None:
    chats = list(range(1, 9))
    await blocked_day(cluster_client, "ev", chats, partitions=4)
    where = ("--cluster", "--stream", "ev", "--partitions", "4")

    stats = (await cli("stats", *where, "--json", url=cluster.url)).json()
    assert [part["dead_letters"]["count"] for part in stats["partitions"]] == [
        await cluster_client.xlen(partition_stream("ev", i) + ":dead") for i in range(4)
    ]
    assert stats["total"]["dead_letters"]["count"] == len(chats)
    letters = (await cli("dead", "list", *where, "--json", url=cluster.url)).json()
    replay = await cli("dead", "replay", *where, "--yes", url=cluster.url)

    assert replay.out.splitlines()[-1] == f"replayed {len(chats)} dead letters"
    for letter in letters:
        found = await cluster_client.xrange(letter["source_stream"])
        assert [f for _, f in found if f.get("codex.replayed_from") == letter["id"]]


async def test_errors_are_one_line_without_the_password(cluster: RedisClusterServer) -> None:
    elsewhere = next(
        name
        for name in (f"{{s{n}}}:events" for n in range(100))
        if cluster.node_for_key(name).port != cluster.nodes[0].port
    )
    no_flag = await cli("stats", "--stream", elsewhere, url=cluster.url)
    assert "is a node of a Redis Cluster (pass --cluster): MOVED " in one_line_error(no_flag)

    port = free_port()
    down = await cli("stats", "--cluster", url=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    assert one_line_error(down).startswith(
        f"Error: cannot use the Redis Cluster at redis://:***@127.0.0.1:{port}/0: "
    )
    assert PASSWORD not in down.out + down.err

    for node in cluster.nodes:
        with node.client() as redis:
            redis.config_set("requirepass", PASSWORD)
    try:
        host = f"127.0.0.1:{cluster.nodes[0].port}"
        wrong = await cli("stats", "--cluster", url=f"redis://:wrong-{PASSWORD}@{host}/0")
    finally:
        for node in cluster.nodes:
            with Redis(host="127.0.0.1", port=node.port, password=PASSWORD) as redis:
                redis.config_set("requirepass", "")
    assert one_line_error(wrong).startswith("Error: ")
    assert "***" in wrong.err
    assert PASSWORD not in wrong.out + wrong.err


async def test_metrics_of_a_partitioned_processor_on_the_cluster(cluster_client: Any) -> None:
    chats = [1, 2, 3, 4]
    await blocked_day(cluster_client, "ev", chats, stuck=1, partitions=2)
    processor = RedisStreamProcessor(
        RedisStreamStorage(cluster_client), "ev", GROUP, "c2", partitions=2
    )
    metrics = instrument(processor, None, CollectorRegistry())

    samples = parse((await metrics.scrape()).decode())

    for index in range(2):
        name = partition_stream("ev", index)
        pending = len(await cluster_client.xpending_range(name, GROUP, "-", "+", 10))
        assert value(samples, "codex_bot_pending", stream=name, group=GROUP) == pending
        assert value(samples, "codex_bot_stream_lag", stream=name, group=GROUP) == 0
        dead = await cluster_client.xlen(name + ":dead")
        assert value(samples, "codex_bot_dead_letters", stream=name) == dead
    assert value(samples, "codex_bot_pending", stream="ev", group=GROUP) is None
