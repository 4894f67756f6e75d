"""The cluster scenario: the codex_bot drain on a 3-master Redis Cluster against one Redis.

``run`` starts a throwaway Redis Cluster (``codex_bot.testing.RedisClusterServer``: three
masters, no replicas, the same redis-server binary as the benchmark's own Redis) next to the
benchmark's Redis, pre-fills ``drain_events`` entries three times (``bench.fill``) and drains
them, ``repeat`` rounds interleaved so a noisy neighbour slows every contender alike:

- ``single``: ``python -m bench.codex drain`` on the benchmark's one Redis, exactly as in the
  drain scenario (the reference the cluster figures are divided by);
- ``cluster``: the same processor and no-op handler on one hash-tagged stream,
  ``{bench}:drain``, through its own ``redis.asyncio.RedisCluster`` (one shard does all
  the work: a stream lives in one slot);
- ``partitioned``: one processor reading ``PARTITIONS`` partition streams
  (``StreamProducer(partitions=...)`` / ``RedisStreamProcessor(partitions=...)``), which the
  cluster spreads over its three shards.

Figures (medians over the rounds): ``cluster_eps``, ``cluster_vs_single`` (the cluster's
median over the single Redis's median), ``cluster_partitioned_eps``; each run also reports
the Redis CPU it cost per event (the cluster's: summed over its masters, from INFO cpu).

``python -m bench.cluster drain --url NODE --stream S [--partitions N]`` is the cluster
contender's child process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from redis.asyncio import RedisCluster

from bench.codex import CountingStorage, _drain, _processor
from bench.common import (
    child_parser,
    drain_result,
    group_state,
    last_entry_id,
    wait_done,
    wait_until,
)
from bench.scenarios import Bench, ChildError, _get, say
from codex_bot.redis import RedisStreamStorage, partition_stream

STREAM = "{bench}:drain"
"""The hash-tagged stream: its dead letters and retry ledger share its slot."""
PARTITIONED = "cluster:drain"
"""The partitioned stream's name (no braces: each partition carries its own tag; 2 per shard)."""
PARTITIONS = 6
SINGLE = "cluster:single"
"""The single-Redis reference's stream, on the benchmark's own Redis."""
_ACK_TIMEOUT = 60.0


def run(bench: Bench) -> None:
    """Start the cluster, fill it, drain it and the single Redis in turns; fill the results."""
    from codex_bot.testing import RedisClusterServer, RedisServerError

    s, r = bench.sizes, bench.results
    say(
        f"cluster: {s.drain_events:,} events, no-op handler, 3-master Redis Cluster "
        f"(one hash-tagged stream; {PARTITIONS} partitions) against one Redis"
    )
    try:
        with RedisClusterServer(masters=3) as cluster:
            result = _rounds(bench, cluster)
    except RedisServerError as exc:
        raise ChildError(f"the Redis Cluster did not start: {exc}") from exc
    result["partitions"] = PARTITIONS
    medians = {name: _get(result[name], "eps") for name in ("single", "cluster", "partitioned")}
    result["single_eps"] = medians["single"]
    r["cluster"] = result
    r["cluster_eps"] = medians["cluster"]
    r["cluster_partitioned_eps"] = medians["partitioned"]
    for name, key in (
        ("cluster", "cluster_vs_single"),
        ("partitioned", "cluster_partitioned_vs_single"),
    ):
        if medians[name] and medians["single"]:
            r[key] = medians[name] / medians["single"]
            say(f"  {name} / one Redis: {r[key]:.0%} (medians)")


def _rounds(bench: Bench, cluster: Any) -> dict[str, Any]:
    """Fill the three streams, then drain them ``repeat`` rounds, interleaved."""
    events = bench.sizes.drain_events
    bench.fill(SINGLE, "drain", events)
    on_cluster, parts = ("--cluster",), ("--partitions", str(PARTITIONS))
    bench.fill(STREAM, "drain", events, None, *on_cluster, url=cluster.url)
    bench.fill(PARTITIONED, "drain", events, None, *on_cluster, *parts, url=cluster.url)
    result = bench.rounds(
        {
            "single": lambda: bench.child("codex", "drain", SINGLE, events),
            "cluster": lambda: _on_cluster(bench, cluster, STREAM),
            "partitioned": lambda: _on_cluster(bench, cluster, PARTITIONED, *parts),
        }
    )
    shards = {node.port: 0 for node in cluster.nodes}
    for i in range(PARTITIONS):
        shards[cluster.node_for_key(partition_stream(PARTITIONED, i)).port] += 1
    result["partitions_per_shard"] = sorted(shards.values(), reverse=True)
    return result


def _on_cluster(bench: Bench, cluster: Any, stream: str, *extra: str) -> dict[str, Any]:
    """One cluster drain in a child, with the CPU the cluster's masters spent on it."""
    events = bench.sizes.drain_events
    cpu = _cluster_cpu(cluster)
    run = bench.child("cluster", "drain", stream, events, *extra, url=cluster.url)
    run["redis_cpu_us_per_event"] = (_cluster_cpu(cluster) - cpu) / events * 1e6
    return run


def _cluster_cpu(cluster: Any) -> float:
    """CPU seconds (user + system) every node of the cluster has used so far."""
    total = 0.0
    for node in cluster.nodes:
        with node.client() as client:
            info = client.info("cpu")
        total += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    return total


# -- the child: python -m bench.cluster drain ---------------------------------------------


async def _drain_mode(args: argparse.Namespace) -> dict[str, Any]:
    client = RedisCluster.from_url(args.url)
    storage = CountingStorage(client)
    try:
        if args.partitions:
            result = await _drain_partitions(client, storage, args)
        else:
            result = await _drain(client, storage, args)
    finally:
        await client.aclose()
    result.update(storage.summary())
    result["partitions"] = args.partitions
    return result


async def _drain_partitions(
    client: RedisCluster, storage: RedisStreamStorage, args: argparse.Namespace
) -> dict[str, Any]:
    """One processor drains every partition: start to last ACK, then each group's state."""
    handled = [0]
    done = asyncio.Event()

    async def noop(payload: dict[str, Any], container: Any) -> None:
        handled[0] += 1
        if handled[0] == args.events:
            done.set()

    reader = _processor(storage, args.stream, args.group, noop, partitions=args.partitions)
    cpu, started = time.process_time(), time.perf_counter()
    async with reader:
        await wait_done(done, lambda: handled[0])
        await wait_until(lambda: reader.stats.acked >= args.events, _ACK_TIMEOUT, what="ACKs")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        owned = reader.owned_partitions
    behind, pending = 0, 0
    for name in (partition_stream(args.stream, i) for i in range(args.partitions)):
        state = await group_state(client, name, args.group)
        pending += state["pending"] or 0
        behind += state["last_delivered_id"] != await last_entry_id(client, name)
    totals = {"pending": pending, "partitions_behind": behind, "last_delivered_id": None}
    result = drain_result(handled[0], seconds, cpu, totals, None)
    result["all_acked"] = pending == 0 and behind == 0
    result["owned_partitions"] = owned
    return result


def main() -> None:
    parser = child_parser(__doc__ or "")
    args = parser.parse_args()
    if args.mode != "drain":
        parser.error(f"unknown mode {args.mode!r}: drain")
    result = asyncio.run(_drain_mode(args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
