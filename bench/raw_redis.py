"""Raw redis-py: no framework, nothing decoded, one round trip per 100 entries.

The fastest a Python consumer on redis-py can go; the other contenders are compared with it.

``drain``: XREADGROUP COUNT 100, then the XACK of that batch pipelined with the next read.
``latency``: the same loop with BLOCK, fed by the paced producer of ``bench.latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from redis.asyncio import Redis

from bench.common import (
    connect,
    drain_result,
    group_state,
    last_entry_id,
    latency_result,
    run_child,
    sent_time,
)
from bench.latency import produce_paced

READ_COUNT = 100
CONSUMER = "raw"


async def drain(redis: Redis, stream: str, group: str) -> int:
    """Read and ACK until the group has nothing new; return how many entries were read."""
    streams = {stream: ">"}
    reply = await redis.xreadgroup(group, CONSUMER, streams, count=READ_COUNT)
    handled = 0
    while reply:
        ids = [entry_id for _, entries in reply for entry_id, _fields in entries]
        handled += len(ids)
        async with redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream, group, *ids)
            pipe.xreadgroup(group, CONSUMER, streams, count=READ_COUNT)
            _, reply = await pipe.execute()
    return handled


async def _drain_mode(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.url, hiredis=not args.no_hiredis)
    try:
        await redis.xgroup_create(args.stream, args.group, id="0")
        cpu, started = time.process_time(), time.perf_counter()
        handled = await drain(redis, args.stream, args.group)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        state = await group_state(redis, args.stream, args.group)
        result = drain_result(handled, seconds, cpu, state, await last_entry_id(redis, args.stream))
    finally:
        await redis.aclose()
    result["read_count"] = READ_COUNT
    return result


async def _consume(
    redis: Redis, stream: str, group: str, latencies: list[float], stop: asyncio.Event
) -> None:
    streams = {stream: ">"}
    while not stop.is_set():
        reply = await redis.xreadgroup(group, CONSUMER, streams, count=READ_COUNT, block=100)
        ids = []
        for _, entries in reply or ():
            for entry_id, fields in entries:
                latencies.append(time.perf_counter() - sent_time(fields[b"sent"]))
                ids.append(entry_id)
        if ids:
            await redis.xack(stream, group, *ids)


async def _latency_mode(args: argparse.Namespace) -> dict[str, Any]:
    consumer, producer = connect(args.url), connect(args.url)
    latencies: list[float] = []
    stop = asyncio.Event()
    try:
        await consumer.xgroup_create(args.stream, args.group, id="$", mkstream=True)
        task = asyncio.create_task(_consume(consumer, args.stream, args.group, latencies, stop))
        await asyncio.sleep(0.3)  # the consumer is blocked on its read before the first event
        sent = await produce_paced(producer, args.stream, args.rate, args.seconds)
        deadline = time.perf_counter() + 10
        while len(latencies) < sent and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await consumer.aclose()
        await producer.aclose()
    return latency_result(latencies, sent)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.mode == "drain":
        return await _drain_mode(args)
    return await _latency_mode(args)


if __name__ == "__main__":
    run_child(_main, __doc__ or "")
