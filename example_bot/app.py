"""Builds the bot: the aiogram ``Dispatcher`` with features loaded and the processor bound.

``main.py`` runs it against Telegram; ``demo.py`` and the tests run it against the local
Bot API stand-in. Everything is made here, once, from the settings.
"""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from arq.connections import ArqRedis
from redis.asyncio import Redis

from codex_bot.discovery import include_features
from codex_bot.lifecycle import setup_health_server, setup_redis_events
from codex_bot.redis import (
    ArqRetryScheduler,
    BotRedisDispatcher,
    RedisStreamProcessor,
    RedisStreamStorage,
)
from codex_bot.telegram import RateLimitMiddleware
from example_bot.container import Container
from example_bot.settings import Settings


def create_dispatcher(
    settings: Settings,
    *,
    bot: Bot,
    redis: Redis,
    arq_pool: ArqRedis,
    commands: bool = True,
) -> Dispatcher:
    """Wire the bot: flood control, processor, container, event dispatcher, features, hooks.

    Installs a ``RateLimitMiddleware`` on ``bot.session``, so everything the bot sends (from
    stream handlers and from aiogram handlers alike) is paced by ``settings.telegram_limits``
    in a budget every replica shares through ``redis``. Call it once per ``Bot``.

    Args:
        settings: The bot's settings.
        bot: The aiogram bot handlers send through (``container.bot()``).
        redis: The Redis the stream and the flood budgets live in.
        arq_pool: Where retries are enqueued (``worker.retry_pool(settings)``).
        commands: Include the features' aiogram routers (Telegram commands). An aiogram
            ``Router`` belongs to one ``Dispatcher``, so a second replica in the same
            process (the demo's) passes ``False``; replicas in processes of their own keep them.

    Returns:
        The aiogram dispatcher; run it with ``dp.start_polling(bot)``. Its ``"container"``
        item is the container, which aiogram handlers receive as ``container``.
    """
    flood_control = RateLimitMiddleware(
        redis, settings.telegram_limits, max_flood_wait=settings.max_flood_wait
    )
    bot.session.middleware(flood_control)
    processor = RedisStreamProcessor(
        RedisStreamStorage(redis),
        settings.stream_name,
        settings.group,
        settings.consumer_name,
        poll_interval=settings.poll_interval,
        claim_min_idle_ms=settings.claim_min_idle_ms,
        claim_interval=settings.claim_interval,
        max_concurrency=settings.max_concurrency,
    )
    container = Container(
        settings=settings,
        bot=bot,
        redis=redis,
        processor=processor,
        flood_control=flood_control,
    )
    events = BotRedisDispatcher(
        ArqRetryScheduler(arq_pool, queue_name=settings.arq_queue),
        max_attempts=settings.max_attempts,
        retry_delay=settings.retry_delay,
        max_retry_delay=settings.max_retry_delay,
    )
    dp = Dispatcher(container=container)
    include_features(events, settings.features, dp=dp if commands else None)
    setup_redis_events(dp, processor, redis_dispatcher=events, container=container)
    if settings.health_port:
        # only then: prometheus-client is an extra (pip install "codex_bot[prometheus]")
        from prometheus_client import CollectorRegistry

        from codex_bot.metrics import instrument

        # a registry of its own: tests and demos build several bots in one process
        metrics = instrument(processor, events, CollectorRegistry())
        setup_health_server(
            dp, processor, port=settings.health_port, host=settings.health_host, metrics=metrics
        )
    return dp
