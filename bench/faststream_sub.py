"""FastStream's Redis stream subscriber: ``StreamSub(stream, group=..., consumer=...)``.

Default subscriber settings (XREADGROUP without COUNT, BLOCK 100 ms, one XACK per message
after the handler returns); the broker is built with ``logger=None`` so its two log lines
per message do not count. FastStream creates a missing group at ``$``, so for the drain the
group is made beforehand (at ``--start-id``: ``0`` for the whole stream, an entry id to
drain only what follows it). Without FastStream installed the child prints why and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from bench.common import (
    connect,
    drain_result,
    group_state,
    last_entry_id,
    latency_result,
    run_child,
    sent_time,
    wait_done,
    wait_group_acked,
    wait_until,
)
from bench.latency import produce_paced

CONSUMER = "faststream"
_TIMEOUT = 60.0


def unavailable() -> str | None:
    """Why FastStream's Redis broker cannot be imported, or None when it can."""
    try:
        import faststream.redis  # noqa: F401
    except ImportError as exc:
        return f"faststream[redis] is not installed ({exc}); pip install -e '.[bench]'"
    return None


async def _stop(broker: Any) -> None:
    # FastStream 0.6 renamed close() to stop()
    stop = getattr(broker, "stop", None) or broker.close
    await stop()


async def _drain_mode(args: argparse.Namespace) -> dict[str, Any]:
    from faststream.redis import RedisBroker, StreamSub

    redis = connect(args.url)
    total = args.events
    handled = 0
    done = asyncio.Event()
    broker = RedisBroker(args.url, logger=None)

    @broker.subscriber(stream=StreamSub(args.stream, group=args.group, consumer=CONSUMER))
    async def noop(body: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == total:
            done.set()

    try:
        await redis.xgroup_create(args.stream, args.group, id=args.start_id)
        cpu, started = time.process_time(), time.perf_counter()
        await broker.start()
        await wait_done(done, lambda: handled)
        await wait_group_acked(redis, args.stream, args.group, _TIMEOUT)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        await _stop(broker)
        state = await group_state(redis, args.stream, args.group)
        result = drain_result(handled, seconds, cpu, state, await last_entry_id(redis, args.stream))
    finally:
        await redis.aclose()
    result["read_count"] = None
    return result


async def _latency_mode(args: argparse.Namespace) -> dict[str, Any]:
    from faststream.redis import RedisBroker, StreamSub

    producer = connect(args.url)
    latencies: list[float] = []
    broker = RedisBroker(args.url, logger=None)

    @broker.subscriber(stream=StreamSub(args.stream, group=args.group, consumer=CONSUMER))
    async def on_event(body: Any) -> None:
        latencies.append(time.perf_counter() - sent_time(body["sent"]))

    try:
        await broker.start()
        await asyncio.sleep(0.3)
        sent = await produce_paced(producer, args.stream, args.rate, args.seconds)
        await wait_until(lambda: len(latencies) >= sent, 10.0, 0.005, "latency events")
        await _stop(broker)
    finally:
        await producer.aclose()
    return latency_result(latencies, sent)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    reason = unavailable()
    if reason is not None:
        return {"skipped": reason}
    if args.mode == "drain":
        return await _drain_mode(args)
    return await _latency_mode(args)


if __name__ == "__main__":
    run_child(_main, __doc__ or "")
