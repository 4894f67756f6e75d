"""``/healthz`` and ``/metrics`` over HTTP, for a process manager or a Kubernetes probe.

``/healthz`` answers 200 while every processor consumes, and 503 while one is stopped, cannot
reach Redis, or holds parked entries, with a JSON body that says why. ``/metrics`` serves the
metrics of ``codex_bot.metrics.instrument`` in the Prometheus text format. Run them on a port
of their own with ``start_health_server``, or add the routes to the aiohttp app of a webhook
bot with ``setup_health``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from codex_bot.redis.processor import RedisStreamProcessor

if TYPE_CHECKING:
    from codex_bot.metrics import BotMetrics

logger = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
_SHOWN_PARKED = 10
"""Parked entries listed by id in the body; the count says how many there are."""
_NO_STORE = {"Cache-Control": "no-store"}

Processors = RedisStreamProcessor | Iterable[RedisStreamProcessor]


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the processors consume, and why not.

    Attributes:
        healthy: Every processor is consuming (``processor.is_healthy``).
        reasons: One line per problem, naming the stream; empty when healthy.
        streams: Per processor: stream, group, consumer, running, consuming, in_flight,
            parked (count and the first few ids with their reason), redis_errors.
    """

    healthy: bool
    reasons: tuple[str, ...]
    streams: tuple[dict[str, Any], ...]

    def as_json(self) -> dict[str, Any]:
        """The ``/healthz`` body."""
        status = "ok" if self.healthy else "unavailable"
        return {"status": status, "reasons": list(self.reasons), "streams": list(self.streams)}


def check_health(processors: Processors) -> Health:
    """Look at each processor: running, reaching Redis, nothing parked.

    Args:
        processors: One processor or several (one per stream).

    Returns:
        Healthy when every processor consumes; otherwise the reasons, one per problem.
    """
    reasons: list[str] = []
    streams: list[dict[str, Any]] = []
    for processor in _as_tuple(processors):
        reasons.extend(_problems(processor))
        parked = processor.parked
        streams.append(
            {
                "stream": processor.stream_name,
                "group": processor.group_name,
                "consumer": processor.consumer_name,
                "running": processor.is_running,
                "consuming": processor.is_healthy,
                "in_flight": processor.in_flight,
                "parked": len(parked),
                "parked_entries": dict(list(parked.items())[:_SHOWN_PARKED]),
                "redis_errors": processor.stats.errors,
            }
        )
    return Health(not reasons, tuple(reasons), tuple(streams))


def _problems(processor: RedisStreamProcessor) -> list[str]:
    stream = processor.stream_name
    if not processor.is_running:
        return [f"{stream}: the processor is stopped"]
    problems: list[str] = []
    parked = processor.parked
    if parked:
        first = next(iter(parked.values()))
        problems.append(
            f"{stream}: {len(parked)} entr(ies) parked, their dead letter could not be "
            f"written ({first}); fix the cause, then release_parked() or restart"
        )
    elif not processor.is_healthy:
        problems.append(
            f"{stream}: not consuming: Redis is unreachable or the consumer group is being "
            f"created ({processor.stats.errors} failed Redis calls so far)"
        )
    return problems


def _as_tuple(processors: Processors) -> tuple[RedisStreamProcessor, ...]:
    if isinstance(processors, RedisStreamProcessor):
        return (processors,)
    return tuple(processors)


def setup_health(
    app: web.Application,
    processors: Processors,
    *,
    metrics: BotMetrics | None = None,
    health_path: str = HEALTH_PATH,
    metrics_path: str = METRICS_PATH,
) -> None:
    """Add ``GET /healthz`` (and ``GET /metrics`` when ``metrics`` is given) to ``app``.

    For a webhook bot, whose aiohttp app already listens: the probe and the scrape use
    its port. Add the routes before the app starts.

    Args:
        app: The aiohttp application.
        processors: The processor, or several (one per stream); all must consume for a 200.
        metrics: What ``codex_bot.metrics.instrument()`` returned; serves ``/metrics``.
        health_path: Where the health check answers.
        metrics_path: Where the metrics are served.
    """
    watched = _as_tuple(processors)

    async def healthz(request: web.Request) -> web.Response:
        health = check_health(watched)
        return web.json_response(
            health.as_json(), status=200 if health.healthy else 503, headers=_NO_STORE
        )

    app.router.add_get(health_path, healthz)
    if metrics is not None:
        scrape = metrics.scrape
        content_type = metrics.content_type

        async def prometheus(request: web.Request) -> web.Response:
            body = await scrape()
            return web.Response(body=body, headers={"Content-Type": content_type, **_NO_STORE})

        app.router.add_get(metrics_path, prometheus)


class HealthServer:
    """A running ``/healthz`` (and ``/metrics``) server; ``await stop()`` ends it.

    Attributes:
        host: The address it listens on.
        port: The port it listens on (the one the system chose when asked for port 0).
    """

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port``, with a reachable address for a server on every interface."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening and close open connections. Idempotent."""
        await self._runner.cleanup()

    async def __aenter__(self) -> HealthServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def start_health_server(
    processors: Processors,
    *,
    port: int = 8080,
    host: str = "0.0.0.0",  # a probe comes from outside the container
    metrics: BotMetrics | None = None,
) -> HealthServer:
    """Serve ``/healthz`` (and ``/metrics``) on a port of its own, on the running loop.

    Args:
        processors: The processor, or several (one per stream).
        port: The port; 0 lets the system choose (see ``HealthServer.port``).
        host: The address to listen on; every interface by default, as a Kubernetes probe
            or a Prometheus server elsewhere needs. ``127.0.0.1`` keeps it on the machine.
        metrics: What ``codex_bot.metrics.instrument()`` returned; serves ``/metrics``.

    Returns:
        The running server; ``await server.stop()`` (or ``async with``) ends it.

    Raises:
        OSError: the port cannot be bound (in use, not allowed).
    """
    app = web.Application()
    setup_health(app, processors, metrics=metrics)
    runner = web.AppRunner(app, access_log=None)  # a probe every few seconds is not news
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    bound: Sequence[Any] = runner.addresses[0]
    logger.info("health checks on %s:%s%s", host, bound[1], HEALTH_PATH)
    return HealthServer(runner, host, int(bound[1]))
