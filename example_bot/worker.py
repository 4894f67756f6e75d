"""The arq worker that brings failed events back to their stream.

Run it next to the bot (as many as you like; they share the queue)::

    REDIS_URL=redis://localhost:6379/0 arq example_bot.worker.WorkerSettings

Jobs are JSON, not pickle: arq's default serializer is pickle, which would run whatever
code a job in Redis names. The bot's pool (``retry_pool``) and the worker must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name
from arq.worker import Worker, create_worker
from redis.asyncio import ConnectionPool

from codex_bot.redis import redeliver_event
from example_bot.settings import Settings


def dumps_job(job: dict[str, Any]) -> bytes:
    """arq job serializer: compact JSON."""
    return json.dumps(job, separators=(",", ":")).encode()


def loads_job(data: bytes) -> dict[str, Any]:
    """arq job deserializer: JSON."""
    job: dict[str, Any] = json.loads(data)
    return job


def retry_pool(settings: Settings) -> ArqRedis:
    """The bot's arq pool, for ``ArqRetryScheduler``.

    Built without arq's ``create_pool``, which pings Redis and gives up after a few tries:
    this one connects on first use, so the bot starts while Redis is down (a failed
    ``enqueue_job`` leaves the event pending, and it comes back). Close it with ``aclose()``.
    """
    pool = ArqRedis(
        connection_pool=ConnectionPool.from_url(settings.redis_url),
        job_serializer=dumps_job,
        job_deserializer=loads_job,
        default_queue_name=settings.arq_queue,
    )
    pool.auto_close_connection_pool = True  # aclose() closes the connections too
    return pool


class WorkerSettings:
    """``arq example_bot.worker.WorkerSettings``.

    arq reads this class's own attributes only (not inherited ones), so every setting is
    spelled out here.
    """

    functions = [redeliver_event]  # noqa: RUF012 - arq's settings are class attributes
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://localhost:6379"))
    queue_name = os.environ.get("ARQ_QUEUE", default_queue_name)
    job_serializer = dumps_job
    job_deserializer = loads_job
    max_jobs = 100
    # redeliver_event asks arq to retry while the stream's Redis is unreachable (backoff up
    # to 60 s); 30 tries ride out about 25 minutes of outage before arq gives the job up.
    max_tries = 30


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, **overrides: Any) -> AsyncIterator[Worker]:
    """Run ``WorkerSettings`` inside this process (the demo and the tests), then stop it.

    Args:
        settings: Where Redis is and which queue to serve.
        overrides: Worker arguments that replace ``WorkerSettings``' (e.g. ``poll_delay``).

    Yields:
        The running worker (``jobs_complete`` counts redelivered events).
    """
    options: dict[str, Any] = {
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "queue_name": settings.arq_queue,
        "handle_signals": False,
        **overrides,
    }
    worker = create_worker(dict(vars(WorkerSettings)), **options)  # arq reads __dict__ too
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
