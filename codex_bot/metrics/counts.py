"""``EventCounts``: the dispatcher observer behind the per-type and per-handler metrics.

Plain integers and lists, updated on the event loop for each event; Prometheus reads them
at scrape time. Counting this way costs a few dictionary operations per event, where a
labelled ``prometheus_client.Counter`` takes a lock and a label lookup for each increment.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from codex_bot.redis.observer import HandlerTimer
from codex_bot.redis.reports import DispatchReport

HANDLER_BUCKETS: tuple[float, ...] = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds, in seconds, of ``codex_bot_handler_seconds``: a Telegram call takes 50-300 ms."""
MAX_TYPES = 500
"""Distinct event types counted per stream; the rest are counted as ``OTHER_TYPE``, so a
producer that invents types cannot grow the metrics without bound."""
OTHER_TYPE = "_other"

HANDLED, FAILED, RETRIED, DEAD_LETTERED = range(4)
"""Indexes of ``EventCounts.by_type`` values."""


class HandlerTiming:
    """A histogram of one handler's call durations: counts per bucket, and their sum.

    Args:
        bounds: Upper bounds of the buckets, ascending; a last bucket takes the rest.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one call that took ``seconds``."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus buckets: ``(le, count of calls up to le)``, ``+Inf`` last."""
        buckets: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            buckets.append((bound, running))
        return buckets


class EventCounts:
    """Counts what becomes of events, by stream and type, and times each handler.

    Add it to a dispatcher with ``dispatcher.add_observer(counts)``.

    Args:
        buckets: Upper bounds of the handler-duration buckets, in seconds.

    Attributes:
        handlers: ``(type, handler) -> HandlerTiming``.
    """

    def __init__(self, buckets: Sequence[float] = HANDLER_BUCKETS) -> None:
        self.buckets = tuple(sorted(buckets))
        self.handlers: dict[tuple[str, str], HandlerTiming] = {}
        # by stream, then type: no key tuple to allocate per event
        self._streams: dict[str, dict[str, list[int]]] = {}

    @property
    def by_type(self) -> dict[tuple[str, str], list[int]]:
        """``(stream, type) -> [handled, failed, retried, dead-lettered]`` (a copy).

        Events whose handlers all succeeded; events with a handler that failed; events
        handed to a retry; events with a dead letter (failures not retried, unknown types).
        """
        return {
            (stream, event_type): list(counts)
            for stream, types in tuple(self._streams.items())
            for event_type, counts in tuple(types.items())
        }

    def dispatched(self, report: DispatchReport, stream_name: str) -> None:
        """Count one event (``DispatchObserver``)."""
        types = self._streams.get(stream_name)
        counts = None if types is None else types.get(report.event_type)
        if counts is None:
            counts = self._new_type(stream_name, report.event_type)
        if not report.failed:
            if not report.unknown:
                counts[HANDLED] += 1
                if not report.dead_letters:  # the common case ends here
                    return
        else:
            counts[FAILED] += 1
        if report.retried_handlers:
            counts[RETRIED] += 1
        if report.dead_letters:
            counts[DEAD_LETTERED] += 1

    def _new_type(self, stream: str, event_type: str) -> list[int]:
        types = self._streams.setdefault(stream, {})
        if len(types) >= MAX_TYPES:
            return types.setdefault(OTHER_TYPE, [0, 0, 0, 0])
        counts = types[event_type] = [0, 0, 0, 0]
        return counts

    def handler_timer(self, event_type: str, handler: str) -> HandlerTimer:
        """The histogram for ``handler`` on ``event_type`` (``DispatchObserver``)."""
        timing = self.handlers.get((event_type, handler))
        if timing is None:
            timing = self.handlers[event_type, handler] = HandlerTiming(self.buckets)
        return timing.observe  # a bound method: cheaper to call than the object's __call__
