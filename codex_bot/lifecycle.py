"""Bind a ``RedisStreamProcessor`` to an aiogram ``Dispatcher``'s startup and shutdown.

Works the same for ``dp.start_polling(bot)`` and for a webhook app set up with aiogram's
``setup_application(app, dp, bot=bot)``: both run the dispatcher's startup hooks before
updates flow and its shutdown hooks before the bot session is closed.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiogram import Dispatcher

from codex_bot.health import HealthServer, Processors, start_health_server
from codex_bot.redis.dispatcher import BotRedisDispatcher
from codex_bot.redis.exceptions import CodexBotError
from codex_bot.redis.processor import RedisStreamProcessor

if TYPE_CHECKING:
    from codex_bot.metrics import BotMetrics

logger = logging.getLogger(__name__)


def setup_redis_events(
    dp: Dispatcher,
    processor: RedisStreamProcessor,
    *,
    redis_dispatcher: BotRedisDispatcher | None = None,
    container: Any = None,
) -> None:
    """Start ``processor`` with the bot and stop it, draining in-flight handlers, on shutdown.

    The startup hook returns at once even while Redis is unreachable (the processor keeps
    retrying in the background), because a startup hook that raises makes aiogram skip every
    shutdown hook. The shutdown hook runs before aiogram closes the bot session, so handlers
    still draining can send. With a webhook, call ``setup_application(app, dp, ...)`` before
    ``SimpleRequestHandler(...).register(app, ...)``: aiohttp runs shutdown callbacks in the
    order they were added, and the request handler's callback closes the bot session.

    Args:
        dp: The aiogram dispatcher whose ``startup``/``shutdown`` observers get the hooks.
        processor: The processor to start and stop.
        redis_dispatcher: When given, becomes the processor's message callback.
        container: When given, ``redis_dispatcher.setup(container)`` is called with it.

    Raises:
        ValueError: ``container`` was given without a ``redis_dispatcher`` to set it on.
        CodexBotError: the processor would fail in aiogram's startup hook: it has no message
            callback and no ``redis_dispatcher`` is given, or its dispatcher was never set up
            (pass ``container``, or call ``setup(container)`` first).

    Example:
        ```python
        setup_redis_events(dp, processor, redis_dispatcher=events, container=container)
        await dp.start_polling(bot)
        ```
    """
    if redis_dispatcher is not None:
        if container is not None:
            redis_dispatcher.setup(container)
        processor.set_message_callback(redis_dispatcher.process_message)
    elif container is not None:
        msg = "container is set on a BotRedisDispatcher: pass redis_dispatcher as well"
        raise ValueError(msg)
    _check_ready(processor)

    async def start_redis_events() -> None:
        await processor.start_listening()

    async def stop_redis_events() -> None:
        await processor.stop_listening()

    dp.startup.register(start_redis_events)
    dp.shutdown.register(stop_redis_events)


def _check_ready(processor: RedisStreamProcessor) -> None:
    """Fail now, not inside aiogram's startup hook, if the processor cannot consume."""
    callback = processor.message_callback
    if callback is None:
        msg = (
            "the processor has no message callback: pass redis_dispatcher=... to "
            "setup_redis_events, or call processor.set_message_callback(...) first"
        )
        raise CodexBotError(msg)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, BotRedisDispatcher) and not owner.is_ready:
        msg = (
            "the BotRedisDispatcher was never set up: pass container=... to "
            "setup_redis_events, or call dispatcher.setup(container) first"
        )
        raise CodexBotError(msg)


def setup_health_server(
    dp: Dispatcher,
    processors: Processors,
    *,
    port: int = 8080,
    host: str = "0.0.0.0",  # a probe comes from outside the container
    metrics: BotMetrics | None = None,
) -> None:
    """Serve ``/healthz`` (and ``/metrics``) from the bot's startup until its shutdown.

    Call it after ``setup_redis_events``: shutdown hooks run in the order they were added,
    so the probe answers 503 ("stopped") while the processor drains, then goes away. A port
    that cannot be bound is logged as an error and the bot runs without it (a startup hook
    that raised would make aiogram skip every shutdown hook, the processor's drain included).

    Args:
        dp: The aiogram dispatcher whose ``startup``/``shutdown`` observers get the hooks.
        processors: The processor, or several (one per stream).
        port: The port of the health server.
        host: The address it listens on (every interface by default).
        metrics: What ``codex_bot.metrics.instrument()`` returned; serves ``/metrics``.

    Example:
        ```python
        setup_redis_events(dp, processor, redis_dispatcher=events, container=container)
        setup_health_server(dp, processor, port=8080, metrics=instrument(processor, events))
        ```
    """
    servers: list[HealthServer] = []

    async def start_health() -> None:
        try:
            servers.append(
                await start_health_server(processors, port=port, host=host, metrics=metrics)
            )
        except OSError as exc:
            logger.error("no health checks: cannot listen on %s:%s: %s", host, port, exc)  # noqa: TRY400 - no traceback: the line says it

    async def stop_health() -> None:
        while servers:
            await servers.pop().stop()

    dp.startup.register(start_health)
    dp.shutdown.register(stop_health)
