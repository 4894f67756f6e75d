"""codex_bot itself: ``RedisStreamProcessor`` + ``BotRedisDispatcher``, default settings.

Modes (``python -m bench.codex MODE --url ... --stream ...``):
``drain`` (no-op handler over a pre-filled backlog), ``latency`` (paced producer in the same
process), ``slow`` (50 ms handlers, ``max_concurrency=100``, per-chat order checked) and
``memory`` (peak RSS while draining, minus the same process idle). ``--metrics`` runs it
with ``codex_bot.metrics.instrument`` on, scraped once a second while it runs;
``--partitions 1`` drains the stream's one partition ``{STREAM:p0}`` (filled with
``bench.fill --partitions 1``) with ``partitions=1``: leased reads and ACKs, one replica.
``replica`` is one replica of a partitioned stream (``--partitions N --lease-ttl S
--consumer NAME``) for the partitions scenario's failover: it prints ``ready`` once started,
records each event it handles, and at SIGTERM stops (draining, handing its partitions over)
and prints its JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import signal
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

from redis.asyncio import Redis

from bench.common import (
    EVENT_TYPE,
    RssSampler,
    connect,
    drain_result,
    group_state,
    last_entry_id,
    latency_result,
    rss_bytes,
    run_child,
    wait_done,
    wait_group_acked,
    wait_until,
)
from bench.latency import produce_paced
from codex_bot.redis import (
    BotRedisDispatcher,
    GroupConsumer,
    RedisStreamProcessor,
    RedisStreamStorage,
    current_event,
)
from codex_bot.redis.partitioning import partition_stream

CONSUMER = "codex"
SLOW_HANDLER_S = 0.05
SLOW_CONCURRENCY = 100
_TIMEOUT = 60.0
"""Seconds to wait for the last ACKs once every handler ran."""
_MB = 1024 * 1024


class CountingStorage(RedisStreamStorage):
    """``RedisStreamStorage`` counting reads and ACK batches (per batch, never per event)."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.reads = 0
        self.read_entries = 0
        self.read_counts: dict[int, int] = defaultdict(int)
        self.ack_calls = 0
        self.acked = 0

    async def read_new(self, who: GroupConsumer, count: int, block_ms: int) -> Any:
        entries = await super().read_new(who, count, block_ms)
        self.reads += 1
        self.read_entries += len(entries)
        self.read_counts[count] += 1
        return entries

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        acked = await super().ack_events(stream_name, group_name, entry_ids)
        self.ack_calls += 1
        self.acked += len(entry_ids)
        return acked

    def summary(self) -> dict[str, Any]:
        """Reads, entries per read, the COUNTs asked for, ACK round trips and their size."""
        return {
            "reads": self.reads,
            "entries_per_read": self.read_entries / self.reads if self.reads else None,
            "read_count_histogram": dict(sorted(self.read_counts.items())),
            "ack_calls": self.ack_calls,
            "ids_per_ack": self.acked / self.ack_calls if self.ack_calls else None,
        }


SCRAPE_INTERVAL = 1.0
"""Seconds between scrapes with ``--metrics`` (Prometheus's default is 15 s)."""


def _processor(
    storage: RedisStreamStorage,
    stream: str,
    group: str,
    handler: Any,
    *,
    metrics: bool = False,
    consumer: str = CONSUMER,
    container: Any = None,
    **settings: Any,
) -> RedisStreamProcessor:
    """A processor whose dispatcher calls ``handler`` for ``EVENT_TYPE`` with ``container``."""
    dispatcher = BotRedisDispatcher()
    dispatcher.on_message(EVENT_TYPE)(handler)
    dispatcher.setup(container=SimpleNamespace() if container is None else container)
    processor = RedisStreamProcessor(storage, stream, group, consumer, **settings)
    processor.set_message_callback(dispatcher.process_message)
    if metrics:
        from prometheus_client import CollectorRegistry

        from codex_bot.metrics import instrument

        _INSTRUMENTED[processor] = instrument(processor, dispatcher, CollectorRegistry())
    return processor


_INSTRUMENTED: dict[RedisStreamProcessor, Any] = {}
"""``BotMetrics`` of the processors built with ``metrics=True``."""


@contextlib.asynccontextmanager
async def _scraping(processor: RedisStreamProcessor) -> AsyncIterator[list[int]]:
    """Scrape the processor's metrics every ``SCRAPE_INTERVAL`` while the block runs.

    Yields the sizes of the scrapes (none when the processor is not instrumented).
    """
    metrics, sizes = _INSTRUMENTED.get(processor), []

    async def scrape() -> None:
        while True:
            sizes.append(len(await metrics.scrape()))
            await asyncio.sleep(SCRAPE_INTERVAL)

    task = asyncio.create_task(scrape()) if metrics else None
    try:
        yield sizes
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _wait_acked(processor: RedisStreamProcessor, redis: Redis, args: Any, total: int) -> None:
    stats = getattr(processor, "stats", None)
    if stats is not None and hasattr(stats, "acked"):
        await wait_until(lambda: stats.acked >= total, _TIMEOUT, what="ACKs")
        return
    await wait_group_acked(redis, args.stream, args.group, _TIMEOUT)


async def _drain(redis: Redis, storage: RedisStreamStorage, args: Any) -> dict[str, Any]:
    """Drain ``args.events`` entries with a no-op handler; time start to last ACK."""
    total, stream = args.events, _drained_stream(args)
    settings = {} if args.partitions is None else {"partitions": args.partitions}
    done = asyncio.Event()
    handled = 0

    async def noop(payload: dict[str, Any], container: Any) -> None:
        nonlocal handled
        handled += 1
        if handled == total:
            done.set()

    processor = _processor(storage, args.stream, args.group, noop, metrics=args.metrics, **settings)
    cpu, started = time.process_time(), time.perf_counter()
    async with _scraping(processor) as scrapes:
        await processor.start_listening()
        await wait_done(done, lambda: handled)
        await _wait_acked(processor, redis, args, total)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    await processor.stop_listening()
    state = await group_state(redis, stream, args.group)
    result = drain_result(handled, seconds, cpu, state, await last_entry_id(redis, stream))
    result["metrics"], result["partitions"] = args.metrics, args.partitions
    if args.metrics:
        result["scrapes"] = len(scrapes)
    return result


def _drained_stream(args: argparse.Namespace) -> str:
    """The stream a drain reads: ``--stream``, or its one partition with ``--partitions 1``."""
    if args.partitions is None:
        return str(args.stream)
    if args.partitions != 1:
        msg = f"a drain times one stream: --partitions 1, not {args.partitions}"
        raise ValueError(msg)
    return partition_stream(args.stream, 0)


async def _drain_mode(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.url, hiredis=not args.no_hiredis)
    storage = CountingStorage(redis)
    try:
        result = await _drain(redis, storage, args)
    finally:
        await redis.aclose()
    if args.partitions is None:  # a partition's leased storage reads past CountingStorage
        result.update(storage.summary())
    return result


async def _latency_mode(args: argparse.Namespace) -> dict[str, Any]:
    consumer, producer = connect(args.url), connect(args.url)
    latencies: list[float] = []

    async def on_event(payload: dict[str, Any], container: Any) -> None:
        latencies.append(time.perf_counter() - payload["sent"])

    processor = _processor(RedisStreamStorage(consumer), args.stream, args.group, on_event)
    try:
        await processor.start_listening()
        await asyncio.sleep(0.3)  # group created, the read blocked on the server
        sent = await produce_paced(producer, args.stream, args.rate, args.seconds)
        try:
            await wait_until(lambda: len(latencies) >= sent, 10.0, 0.005, "latency events")
        finally:
            await processor.stop_listening()
    finally:
        await consumer.aclose()
        await producer.aclose()
    return latency_result(latencies, sent)


async def _slow_mode(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.url)
    total = args.events
    starts: dict[Any, list[int]] = defaultdict(list)
    finished = 0
    running = peak_running = 0

    async def slow(payload: dict[str, Any], container: Any) -> None:
        nonlocal finished, running, peak_running
        starts[payload["chat_id"]].append(payload["seq"])
        running += 1
        peak_running = max(peak_running, running)
        await asyncio.sleep(SLOW_HANDLER_S)
        running -= 1
        finished += 1

    processor = _processor(
        RedisStreamStorage(redis),
        args.stream,
        args.group,
        slow,
        max_concurrency=SLOW_CONCURRENCY,
    )
    try:
        started = time.perf_counter()
        await processor.start_listening()
        await wait_until(lambda: finished >= total, 120.0, 0.001, "slow handlers")
        seconds = time.perf_counter() - started
        await _wait_acked(processor, redis, args, total)
        acked_seconds = time.perf_counter() - started
        await processor.stop_listening()
    finally:
        await redis.aclose()
    in_order = all(seqs == list(range(len(seqs))) for seqs in starts.values())
    return {
        "events": total,
        "handled": sum(len(seqs) for seqs in starts.values()),
        "chats": len(starts),
        "seconds": seconds,
        "acked_seconds": acked_seconds,
        "order_ok": in_order and finished == total,
        "peak_running": peak_running,
        "max_concurrency": SLOW_CONCURRENCY,
    }


async def _memory_mode(args: argparse.Namespace) -> dict[str, Any]:
    redis = connect(args.url)
    storage = RedisStreamStorage(redis)

    async def noop(payload: dict[str, Any], container: Any) -> None:
        return None

    try:
        idle = _processor(storage, args.stream + ":idle", args.group, noop)
        await idle.start_listening()
        await asyncio.sleep(0.5)  # group created, a read blocked: the bot at rest
        gc.collect()
        idle_rss = rss_bytes()
        idle_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        await idle.stop_listening()
        with RssSampler() as sampler:
            result = await _drain(redis, storage, args)
        peak_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        await redis.aclose()
    result.update(
        {
            "rss_idle_mb": idle_rss / _MB,
            "rss_peak_mb": sampler.peak / _MB,
            "rss_growth_mb": (sampler.peak - idle_rss) / _MB,
            "maxrss_growth_mb": (peak_maxrss - idle_maxrss) / 1024,
            "rss_samples": sampler.samples,
        }
    )
    return result


HANDLED = ":handled"
"""Suffix of the list where replicas record what they handled: ``<stream>:handled``."""


async def _replica_mode(args: argparse.Namespace) -> dict[str, Any]:
    """Consume ``--partitions`` partitions alongside other replicas until SIGTERM.

    Each handler appends ``"<consumer> <partition stream> <n> <time.time()>"`` to
    ``<stream>:handled`` when it starts (the parent, on the same clock, times the failover).
    """
    redis = connect(args.url)
    handled = args.stream + HANDLED

    async def record(payload: dict[str, Any], container: Any) -> None:
        event = current_event()
        where = event.stream_name if event else "-"
        await redis.rpush(handled, f"{args.consumer} {where} {payload['n']} {time.time():.6f}")

    processor = _processor(
        RedisStreamStorage(redis),
        args.stream,
        args.group,
        record,
        consumer=args.consumer,
        partitions=args.partitions,
        lease_ttl=args.lease_ttl,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await processor.start_listening()
        print("ready", flush=True)
        await stop.wait()
        owned = processor.owned_partitions
        await processor.stop_listening()
    finally:
        await redis.aclose()
    return {"consumer": args.consumer, "handled": processor.stats.handled, "owned": owned}


_MODES = {
    "drain": _drain_mode,
    "latency": _latency_mode,
    "slow": _slow_mode,
    "memory": _memory_mode,
    "replica": _replica_mode,
}


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    return await _MODES[args.mode](args)


if __name__ == "__main__":
    run_child(_main, __doc__ or "")
