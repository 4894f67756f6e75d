"""``BotCollector``: the Prometheus collector that reads codex_bot's counters at scrape time.

Nothing is counted through ``prometheus_client`` metric objects: the processor keeps its own
``stats``, ``EventCounts`` keeps the per-type numbers, ``StreamFigures`` caches what Redis
says, and this collector turns them into metric families when Prometheus asks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from codex_bot.metrics.counts import DEAD_LETTERED, FAILED, HANDLED, RETRIED, EventCounts
from codex_bot.metrics.streams import StreamFigures, StreamSnapshot
from codex_bot.redis.processor import RedisStreamProcessor

PREFIX = "codex_bot_"
_GROUP = ("stream", "group")
_TYPE = ("stream", "type")

_EVENTS = (
    (HANDLED, "events_handled", "Events whose handlers all succeeded."),
    (FAILED, "events_failed", "Events on which at least one handler failed."),
    (RETRIED, "events_retried", "Events whose failed handlers were handed to a retry."),
    (
        DEAD_LETTERED,
        "events_dead_lettered",
        "Events the dispatcher dead-lettered (handler failures not retried, unknown types).",
    ),
)
_PROCESSOR_GAUGES: tuple[tuple[str, str, Callable[[RedisStreamProcessor], float]], ...] = (
    ("in_flight", "Entries read and not finished (running or waiting).", lambda p: p.in_flight),
    ("parked", "Entries whose dead letter could not be written.", lambda p: len(p.parked)),
    ("healthy", "1 while the processor is consuming, else 0.", lambda p: float(p.is_healthy)),
)
_PROCESSOR_COUNTERS: tuple[tuple[str, str, Callable[[RedisStreamProcessor], float]], ...] = (
    ("entries_acked", "Entries acknowledged after their handlers.", lambda p: p.stats.acked),
    (
        "entries_dead_lettered",
        "Entries moved to the dead-letter stream, for any reason.",
        lambda p: p.stats.dead_lettered,
    ),
    ("redis_errors", "Failed Redis calls of the read and ACK loops.", lambda p: p.stats.errors),
    (
        "groups_recreated",
        "Times the consumer group was found missing and recreated.",
        lambda p: p.stats.groups_recreated,
    ),
)
_STREAM_GAUGES: tuple[tuple[str, str, Callable[[StreamSnapshot], float | None]], ...] = (
    ("pending", "Entries delivered to the group and not acknowledged.", lambda s: s.pending),
    ("stream_lag", "Entries no consumer of the group has read yet.", lambda s: s.lag),
    (
        "oldest_pending_age_seconds",
        "How long the group's oldest pending entry has waited since a consumer received it.",
        lambda s: s.oldest_pending_age,
    ),
)


@dataclass(frozen=True, slots=True)
class Watched:
    """A processor and the cached Redis figures of its group: one per stream it reads (each
    partition's, with partitions), none when they are not read from Redis."""

    processor: RedisStreamProcessor
    figures: tuple[StreamFigures, ...]


class BotCollector:
    """Turns the counters of processors, dispatchers and Telegram middlewares into metrics.

    One per ``CollectorRegistry``: ``instrument()`` adds to it. ``collect()`` never waits on
    Redis; it starts a refresh of stale figures on the event loop and reports the cache.
    """

    def __init__(self) -> None:
        self.watched: list[Watched] = []
        self.counts: list[EventCounts] = []
        self.telegram: list[object] = []

    def describe(self) -> Iterable[Metric]:
        """The families ``collect()`` yields, without samples (for the registry's checks)."""
        return list(self._families(samples=False))

    def collect(self) -> Iterable[Metric]:
        """The current numbers (``prometheus_client.registry.Collector``)."""
        for item in self.watched:
            for figures in item.figures:
                figures.kick()
        return list(self._families(samples=True))

    def _families(self, *, samples: bool) -> Iterator[Metric]:
        yield from self._event_families(samples)
        yield self._handler_family(samples)
        watched = self.watched if samples else []
        for name, doc, read in _PROCESSOR_GAUGES:
            gauge = GaugeMetricFamily(PREFIX + name, doc, labels=_GROUP)
            for item in watched:
                gauge.add_metric(_group_labels(item), read(item.processor))
            yield gauge
        for name, doc, read in _PROCESSOR_COUNTERS:
            counter = CounterMetricFamily(PREFIX + name, doc, labels=_GROUP)
            for item in watched:
                counter.add_metric(_group_labels(item), read(item.processor))
            yield counter
        # labelled by the stream they were read from: a partitioned processor's per partition
        snapshots = [(each, each.snapshot) for item in watched for each in item.figures]
        for name, doc, pick in _STREAM_GAUGES:
            gauge = GaugeMetricFamily(PREFIX + name, doc, labels=_GROUP)
            for figures, snapshot in snapshots:
                value = pick(snapshot)
                if value is not None:
                    gauge.add_metric([figures.stream, figures.group], value)
            yield gauge
        dead = GaugeMetricFamily(
            PREFIX + "dead_letters", "Letters in the dead-letter stream.", labels=("stream",)
        )
        for figures, snapshot in snapshots:
            if snapshot.dead_letters is not None:
                dead.add_metric([figures.stream], snapshot.dead_letters)
        yield dead
        yield from self._telegram_families(samples)

    def _event_families(self, samples: bool) -> Iterator[Metric]:
        rows = [row for counts in self.counts for row in counts.by_type.items()]
        for index, name, doc in _EVENTS:
            counter = CounterMetricFamily(PREFIX + name, doc, labels=_TYPE)
            for (stream, event_type), values in rows if samples else ():
                counter.add_metric([stream, event_type], values[index])
            yield counter

    def _handler_family(self, samples: bool) -> Metric:
        histogram = HistogramMetricFamily(
            PREFIX + "handler_seconds",
            "Seconds each handler call took, by event type and handler.",
            labels=("type", "handler"),
        )
        for counts in self.counts if samples else ():
            for (event_type, handler), timing in tuple(counts.handlers.items()):
                histogram.add_metric([event_type, handler], timing.cumulative(), timing.total)
        return histogram

    def _telegram_families(self, samples: bool) -> Iterator[Metric]:
        totals: dict[str, float] = {}
        for source in self.telegram:
            for name, value in numeric_stats(source).items():
                totals[name] = totals.get(name, 0.0) + value
        for name, value in totals.items():
            counter = CounterMetricFamily(
                f"{PREFIX}telegram_{name}", f"Telegram rate limiting: stats.{name}."
            )
            if samples:
                counter.add_metric([], value)
            yield counter


def numeric_stats(source: object) -> dict[str, float]:
    """The public numeric attributes of ``source.stats`` (a dataclass, slotted or not).

    Raises:
        TypeError: ``source`` has no ``stats`` attribute.
    """
    stats = getattr(source, "stats", None)
    if stats is None:
        msg = f"{type(source).__name__} has no 'stats' attribute to export"
        raise TypeError(msg)
    if dataclasses.is_dataclass(stats):
        names = [field.name for field in dataclasses.fields(stats)]
    else:
        names = list(getattr(stats, "__dict__", {})) or list(getattr(stats, "__slots__", ()))
    found: dict[str, float] = {}
    for name in names:
        value = getattr(stats, name, None)
        if not name.startswith("_") and isinstance(value, int | float) and type(value) is not bool:
            found[name] = float(value)
    return found


def _group_labels(item: Watched) -> list[str]:
    return [item.processor.stream_name, item.processor.group_name]
