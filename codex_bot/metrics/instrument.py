"""``instrument()``: export a processor's and a dispatcher's numbers to Prometheus."""

from __future__ import annotations

import asyncio
import contextlib
import weakref

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from codex_bot.metrics.collector import BotCollector, Watched, numeric_stats
from codex_bot.metrics.counts import EventCounts
from codex_bot.metrics.streams import StreamFigures
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX
from codex_bot.redis.dispatcher import BotRedisDispatcher
from codex_bot.redis.partitioning import partition_stream
from codex_bot.redis.processor import RedisStreamProcessor
from codex_bot.redis.storage import RedisStreamStorage
from codex_bot.redis.types import AnyRedis

_COLLECTORS: weakref.WeakKeyDictionary[CollectorRegistry, BotCollector] = (
    weakref.WeakKeyDictionary()
)
_OBSERVED: weakref.WeakKeyDictionary[BotRedisDispatcher, dict[int, EventCounts]] = (
    weakref.WeakKeyDictionary()
)
"""The counts each dispatcher feeds, by ``id()`` of the collector they are exported by."""


class BotMetrics:
    """What ``instrument()`` returns: the registry, and a scrape with fresh Redis figures.

    Attributes:
        registry: The ``CollectorRegistry`` the metrics are in.
        content_type: The Prometheus text format's content type, for ``scrape()``'s bytes.
    """

    content_type = "text/plain; version=0.0.4; charset=utf-8"
    """What ``generate_latest`` writes, the text format every Prometheus version reads."""

    def __init__(self, registry: CollectorRegistry, collector: BotCollector) -> None:
        self.registry = registry
        self._collector = collector

    async def refresh(self) -> None:
        """Read stale Redis figures (pending, lag, dead letters) now; cached ones stay."""
        figures = [each for item in self._collector.watched for each in item.figures]
        await asyncio.gather(*(each.refresh() for each in figures))

    async def scrape(self) -> bytes:
        """Every metric of the registry in the Prometheus text format, Redis figures fresh."""
        await self.refresh()
        return generate_latest(self.registry)


def instrument(
    processor: RedisStreamProcessor,
    dispatcher: BotRedisDispatcher | None,
    registry: CollectorRegistry | None = None,
    *,
    telegram: object | None = None,
    redis: AnyRedis | None = None,
    refresh_interval: float = 5.0,
) -> BotMetrics:
    """Export ``processor``'s and ``dispatcher``'s numbers as ``codex_bot_*`` metrics.

    Per event type (from an observer on the dispatcher): events handled, failed, retried and
    dead-lettered, and each handler's duration. From the processor, read at scrape time:
    entries in flight and parked, health, acknowledged and dead-lettered entries, Redis
    errors. From Redis, at most once per ``refresh_interval``: the group's pending count,
    lag, oldest pending age, and the dead-letter stream's length. A partitioned processor's
    Redis figures are each partition's, labelled ``stream="{bot_events:p3}"`` (every
    partition, whichever replica holds it); its other numbers are labelled with the
    stream's name (``bot_events``).

    Call it from async code (the aiogram startup, your ``main()`` coroutine): Redis is read
    on the running loop. A scrape through ``codex_bot.health`` (or ``BotMetrics.scrape()``)
    refreshes stale figures before it answers; any other scrape of the registry (say,
    ``prometheus_client.start_http_server``) reports the cache and starts a refresh on the
    loop for the next one. Call it once per processor; several processors (one per stream)
    may share a registry.

    Args:
        processor: The processor to watch.
        dispatcher: Its ``BotRedisDispatcher``; None exports no per-type numbers.
        registry: Where the metrics go; prometheus_client's default ``REGISTRY`` when None.
        telegram: An object with a ``stats`` attribute (the Telegram rate-limit middleware);
            each public number on it is exported as ``codex_bot_telegram_<name>_total``.
        redis: The client to read the group's figures with (a ``Redis`` or a
            ``RedisCluster``); by default the processor's own (a ``RedisStreamStorage``'s).
            Without either, those figures are not exported.
        refresh_interval: Seconds the Redis figures are reused before Redis is asked again.

    Returns:
        The registry with a ``scrape()`` that refreshes the Redis figures first.

    Raises:
        TypeError: ``telegram`` has no ``stats`` attribute.
    """
    if telegram is not None:
        numeric_stats(telegram)  # fails now rather than at the first scrape
    registry = REGISTRY if registry is None else registry
    collector = _COLLECTORS.get(registry)
    if collector is None:
        collector = _COLLECTORS[registry] = BotCollector()
        registry.register(collector)
    if not any(item.processor is processor for item in collector.watched):
        collector.watched.append(Watched(processor, _figures(processor, redis, refresh_interval)))
    if dispatcher is not None:
        fed = _OBSERVED.setdefault(dispatcher, {})
        if id(collector) not in fed:
            fed[id(collector)] = counts = EventCounts()
            dispatcher.add_observer(counts)
            collector.counts.append(counts)
    if telegram is not None and all(source is not telegram for source in collector.telegram):
        collector.telegram.append(telegram)
    return BotMetrics(registry, collector)


def _figures(
    processor: RedisStreamProcessor, redis: AnyRedis | None, refresh_interval: float
) -> tuple[StreamFigures, ...]:
    if redis is None and isinstance(processor.storage, RedisStreamStorage):
        redis = processor.storage.redis
    if redis is None:
        return ()
    if processor.partitions is None:
        streams = [(processor.stream_name, processor.dead_letter_stream)]
    else:
        names = [partition_stream(processor.stream_name, i) for i in range(processor.partitions)]
        streams = [(name, name + DEAD_LETTER_SUFFIX) for name in names]
    found = tuple(
        StreamFigures(redis, stream, processor.group_name, dead, max_age=refresh_interval)
        for stream, dead in streams
    )
    with contextlib.suppress(RuntimeError):  # no loop yet: the first refresh() binds it
        loop = asyncio.get_running_loop()
        for figures in found:
            figures.bind(loop)
    return found
