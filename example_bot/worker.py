"""Retries for the example bot: the bot's arq pool, and the worker run in-process.

In production the worker is the library's ready one, next to the bot (as many as you like;
they share the queue)::

    REDIS_URL=redis://localhost:6379/0 arq codex_bot.retry_worker.WorkerSettings

The demo and the tests run the same worker inside their own process (``running_worker``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, create_worker

from codex_bot.redis import create_retry_pool
from codex_bot.retry_worker import WORKER_OPTIONS
from example_bot.settings import Settings


def retry_pool(settings: Settings) -> ArqRedis:
    """The bot's arq pool, for ``ArqRetryScheduler``: JSON jobs, connected on first use.

    The bot starts while Redis is down (a failed ``enqueue_job`` leaves the event pending,
    and it comes back). Close it with ``aclose()``.
    """
    return create_retry_pool(settings.redis_url, queue_name=settings.arq_queue)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **overrides: Any) -> AsyncIterator[Worker]:
    """Run this bot's arq worker inside this process (the demo and the tests), then stop it.

    Args:
        settings: Where Redis is and which queue to serve.
        overrides: Worker arguments that replace ``WORKER_OPTIONS`` (e.g. ``poll_delay``).

    Yields:
        The running worker (``jobs_complete`` counts redelivered events).
    """
    options: dict[str, Any] = {
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": settings.arq_queue,
        "handle_signals": False,
        **overrides,
    }
    worker = create_worker(dict(WORKER_OPTIONS), **options)
    task = asyncio.create_task(worker.async_run(), name="arq-worker")
    try:
        yield worker
    finally:
        # Stop polling, let running jobs finish, then close the pool ourselves: Worker.close()
        # would call redis-py's deprecated close().
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)
        pool: ArqRedis | None = worker.pool  # None when the worker never connected
        if pool is not None:
            await pool.aclose()
