"""Prometheus metrics for a bot's processor and dispatcher: ``instrument(processor, dispatcher)``.

Needs prometheus-client: ``pip install "codex_bot[prometheus]"``. Serve them with
``codex_bot.health`` (``/metrics`` beside ``/healthz``), or with any exporter of
prometheus_client, as ``BotMetrics.registry``::

    from codex_bot.metrics import instrument

    metrics = instrument(processor, events)
    body = await metrics.scrape()  # the Prometheus text format
"""

try:
    import prometheus_client  # noqa: F401 - fail here, with the install line, not deeper down
except ImportError as exc:  # pragma: no cover - the extra is part of the dev install
    msg = 'codex_bot.metrics needs prometheus-client: pip install "codex_bot[prometheus]"'
    raise ImportError(msg) from exc

from codex_bot.metrics.collector import BotCollector
from codex_bot.metrics.counts import HANDLER_BUCKETS, EventCounts, HandlerTiming
from codex_bot.metrics.instrument import BotMetrics, instrument
from codex_bot.metrics.streams import StreamFigures, StreamSnapshot

__all__ = [
    "HANDLER_BUCKETS",
    "BotCollector",
    "BotMetrics",
    "EventCounts",
    "HandlerTiming",
    "StreamFigures",
    "StreamSnapshot",
    "instrument",
]
