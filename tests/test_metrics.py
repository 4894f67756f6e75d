"""Prometheus metrics of a real processor on a real Redis, scraped over HTTP and parsed.

Handlers succeed, fail and are retried through a real arq pool, fail for good and are
dead-lettered; events of an unknown type and an entry without a type are dead-lettered too.
The scrape's numbers must say exactly that.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from arq.connections import ArqRedis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from codex_bot.health import start_health_server
from codex_bot.metrics import EventCounts, instrument
from codex_bot.redis import (
    ArqRetryScheduler,
    BotRedisDispatcher,
    HandlerFailedError,
    RetryDecision,
    StreamProducer,
    classify_failure,
    partition_stream,
)
from codex_bot.redis.dispatcher import handler_name
from tests._helpers import ROOT, arq_pool, run_python, without_package
from tests.conftest import pending_count, wait_for

pytestmark = pytest.mark.redis_versions

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Hopeless(Exception):
    """A failure the classifier sends straight to the dead-letter stream."""


def classify(exc: BaseException) -> RetryDecision:
    if isinstance(exc, Hopeless):
        return RetryDecision(retry=False, reason="hopeless")
    return classify_failure(exc)


async def paid(payload: dict[str, Any], container: Any) -> None:
    await asyncio.sleep(0.01)


async def flaky(payload: dict[str, Any], container: Any) -> None:
    raise RuntimeError("backend busy")


async def blocked(payload: dict[str, Any], container: Any) -> None:
    raise Hopeless("the bot was blocked")


@dataclass
class RateLimitStats:
    """What the Telegram rate-limit middleware counts, as far as the metrics care."""

    waits: int = 0
    wait_seconds: float = 0.0
    retry_after_absorbed: int = 0
    retry_after_raised: int = 0


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text scrape, by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
async def bot_pool(redis_server: Any) -> AsyncIterator[ArqRedis]:
    """The bot's arq pool on this module's server (JSON jobs, arq's default queue)."""
    async with arq_pool(redis_server.url) as pool:
        yield pool


async def scrape_over_http(url: str) -> tuple[str, str]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as response:
        assert response.status == 200
        return response.headers["Content-Type"], await response.text()


async def test_a_scrape_over_http_says_what_happened_to_each_event(
    redis: Redis, stream: str, make_processor: Any, bot_pool: ArqRedis
) -> None:
    events = BotRedisDispatcher(ArqRetryScheduler(bot_pool), retry_delay=3600, classifier=classify)
    events.on_message("order.paid")(paid)
    events.on_message("order.flaky")(flaky)
    events.on_message("order.blocked")(blocked)
    events.setup(container=None)
    processor = make_processor(redis, stream, events.process_message)
    telegram = SimpleNamespace(stats=RateLimitStats(3, 1.5, 2, 1))
    metrics = instrument(processor, events, CollectorRegistry(), telegram=telegram)

    producer = StreamProducer(redis, stream)
    await producer.add_events(
        [("order.paid", {"chat_id": n}) for n in range(5)]
        + [("order.flaky", {"chat_id": 10 + n}) for n in range(2)]
        + [("order.blocked", {"chat_id": 20 + n}) for n in range(3)]
        + [("order.unknown", {"chat_id": 30})]
    )
    await redis.xadd(stream, {"chat_id": "40"})  # no type: the processor dead-letters it
    async with await start_health_server(processor, port=0, metrics=metrics) as server:
        await processor.start_listening()
        await wait_for(
            lambda: processor.stats.acked == 7 and processor.stats.dead_lettered == 5,
            message="every event settled",
        )
        assert await pending_count(redis, stream) == 0
        content_type, text = await scrape_over_http(server.url)

    assert content_type.startswith("text/plain; version=0.0.4")
    samples = parse(text)
    events_by = {
        (kind, event_type): value(
            samples, f"codex_bot_events_{kind}_total", stream=stream, type=event_type
        )
        for kind in ("handled", "failed", "retried", "dead_lettered")
        for event_type in ("order.paid", "order.flaky", "order.blocked", "order.unknown")
    }
    assert {key: n for key, n in events_by.items() if n} == {
        ("handled", "order.paid"): 5,
        ("failed", "order.flaky"): 2,
        ("retried", "order.flaky"): 2,
        ("failed", "order.blocked"): 3,
        ("dead_lettered", "order.blocked"): 3,
        ("dead_lettered", "order.unknown"): 1,
    }
    group = {"stream": stream, "group": "bot"}
    assert value(samples, "codex_bot_entries_acked_total", **group) == 7
    assert value(samples, "codex_bot_entries_dead_lettered_total", **group) == 5
    assert value(samples, "codex_bot_in_flight", **group) == 0
    assert value(samples, "codex_bot_parked", **group) == 0
    assert value(samples, "codex_bot_healthy", **group) == 1
    assert value(samples, "codex_bot_redis_errors_total", **group) == 0
    assert value(samples, "codex_bot_pending", **group) == 0
    assert value(samples, "codex_bot_stream_lag", **group) == 0
    assert value(samples, "codex_bot_dead_letters", stream=stream) == 5  # a letter per failure
    assert value(samples, "codex_bot_oldest_pending_age_seconds", **group) is None

    for event_type, handler, calls in (
        ("order.paid", paid, 5),
        ("order.flaky", flaky, 2),
        ("order.blocked", blocked, 3),
    ):
        labels = {"type": event_type, "handler": handler_name(handler)}
        assert value(samples, "codex_bot_handler_seconds_count", **labels) == calls
        assert value(samples, "codex_bot_handler_seconds_bucket", **labels, le="+Inf") == calls
    paid_labels = {"type": "order.paid", "handler": handler_name(paid)}
    assert value(samples, "codex_bot_handler_seconds_sum", **paid_labels) >= 0.05  # 5 x 10 ms
    assert value(samples, "codex_bot_handler_seconds_bucket", **paid_labels, le="0.005") == 0

    assert value(samples, "codex_bot_telegram_waits_total") == 3
    assert value(samples, "codex_bot_telegram_wait_seconds_total") == 1.5
    assert value(samples, "codex_bot_telegram_retry_after_absorbed_total") == 2
    assert value(samples, "codex_bot_telegram_retry_after_raised_total") == 1


async def test_redis_figures_are_cached_and_a_scrape_on_another_thread_never_waits(
    redis: Redis, stream: str, make_processor: Any
) -> None:
    events = BotRedisDispatcher()
    events.setup(container=None)
    processor = make_processor(redis, stream, events.process_message)
    registry = CollectorRegistry()
    metrics = instrument(processor, events, registry, refresh_interval=60)
    await redis.xgroup_create(stream, "bot", id="0", mkstream=True)
    await StreamProducer(redis, stream).add_events([("t", {"n": n}) for n in range(5)])
    await redis.xreadgroup("bot", "elsewhere", {stream: ">"}, count=2)  # 2 pending, 3 waiting

    async def scrape_on_a_thread() -> Samples:
        return parse((await asyncio.to_thread(generate_latest, registry)).decode())

    # a scrape on prometheus_client's own thread: the cache is empty, a refresh starts on
    # the loop, and the scrape answers without it
    first = await scrape_on_a_thread()
    assert value(first, "codex_bot_pending", stream=stream, group="bot") is None
    second = await wait_for(
        lambda: _with_pending(scrape_on_a_thread(), stream), message="the refresh on the loop"
    )
    assert value(second, "codex_bot_pending", stream=stream, group="bot") == 2
    assert value(second, "codex_bot_stream_lag", stream=stream, group="bot") == 3
    age = value(second, "codex_bot_oldest_pending_age_seconds", stream=stream, group="bot")
    assert age is not None
    assert 0 <= age < 60
    assert value(second, "codex_bot_dead_letters", stream=stream) == 0

    # within refresh_interval Redis is not asked again, however often Prometheus scrapes
    await StreamProducer(redis, stream).add_event("t", {"n": 5})
    third = parse((await metrics.scrape()).decode())
    assert value(third, "codex_bot_stream_lag", stream=stream, group="bot") == 3
    assert value(third, "codex_bot_healthy", stream=stream, group="bot") == 0  # not started


async def test_instrument_twice_counts_once_and_several_streams_share_a_registry(
    redis: Redis, stream: str, make_processor: Any
) -> None:
    events = BotRedisDispatcher()
    events.on_message("t")(paid)
    events.setup(container=None)
    first = make_processor(redis, stream, events.process_message)
    second = make_processor(redis, stream + ":2", events.process_message)
    registry = CollectorRegistry()
    for processor in (first, second, first):
        metrics = instrument(processor, events, registry)
    await StreamProducer(redis, stream).add_event("t", {"n": 1})
    await StreamProducer(redis, stream + ":2").add_event("t", {"n": 2})
    async with first, second:
        await wait_for(lambda: first.stats.acked == 1 and second.stats.acked == 1)
    samples = parse((await metrics.scrape()).decode())
    for name in (stream, stream + ":2"):
        assert value(samples, "codex_bot_events_handled_total", stream=name, type="t") == 1
        assert value(samples, "codex_bot_entries_acked_total", stream=name, group="bot") == 1
    labels = {"type": "t", "handler": handler_name(paid)}
    assert value(samples, "codex_bot_handler_seconds_count", **labels) == 2


async def _with_pending(scrape: Any, stream: str) -> Samples | None:
    samples: Samples = await scrape
    return samples if value(samples, "codex_bot_pending", stream=stream, group="bot") else None


def test_telegram_needs_a_stats_attribute(redis: Redis, stream: str, make_processor: Any) -> None:
    processor = make_processor(redis, stream, BotRedisDispatcher().process_message)
    with pytest.raises(TypeError, match="no 'stats' attribute"):
        instrument(processor, None, CollectorRegistry(), telegram=object())


async def test_a_failure_nobody_retries_is_counted_failed_only() -> None:
    events = BotRedisDispatcher()  # no retry scheduler: the failure raises, the entry stays
    events.on_message("t")(flaky)
    events.setup(container=None)
    counts = EventCounts()
    events.add_observer(counts)
    with pytest.raises(HandlerFailedError):
        await events.process_message({"type": "t"}, stream_name="s")
    assert counts.by_type == {("s", "t"): [0, 1, 0, 0]}
    assert sum(counts.handlers["t", handler_name(flaky)].counts) == 1


def test_without_prometheus_client_only_the_metrics_need_it(tmp_path: Path) -> None:
    # a package that fails to import stands in for an install without the prometheus extra
    pythonpath = without_package(tmp_path, "prometheus_client")
    script = (
        "import codex_bot.health, codex_bot.lifecycle, example_bot.app\n"
        "try:\n"
        "    import codex_bot.metrics\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    proc = run_python("-c", script, cwd=ROOT, PYTHONPATH=pythonpath)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        'codex_bot.metrics needs prometheus-client: pip install "codex_bot[prometheus]"'
    )


async def test_a_partitioned_processor_reports_each_partition(
    redis: Redis, stream: str, make_processor: Any
) -> None:
    processor = make_processor(redis, stream, BotRedisDispatcher().process_message, partitions=3)
    metrics = instrument(processor, None, CollectorRegistry())
    names = [partition_stream(stream, index) for index in range(3)]
    for index, name in enumerate(names[:2]):
        await redis.xgroup_create(name, "bot", id="0", mkstream=True)
        await redis.xadd(name, {"type": "t"})
        await redis.xadd(name + ":dead", {"type": "t"})
        for _ in range(index):
            await redis.xadd(name, {"type": "t"})
    await redis.xreadgroup("bot", "elsewhere", {names[0]: ">"})  # p0: 1 pending; p1: lag 2

    samples = parse((await metrics.scrape()).decode())

    def figure(name: str, stream_name: str) -> float | None:
        return value(samples, f"codex_bot_{name}", stream=stream_name, group="bot")

    assert [figure("pending", name) for name in names] == [1, 0, None]  # p2 does not exist
    assert [figure("stream_lag", name) for name in names] == [0, 2, None]
    assert figure("oldest_pending_age_seconds", names[0]) is not None
    assert [value(samples, "codex_bot_dead_letters", stream=name) for name in names] == [1, 1, None]
    assert figure("pending", stream) is None  # per partition, not summed
    assert figure("healthy", stream) == 0  # the processor's own numbers: the stream's name
