"""The arq worker that brings failed events back to their stream.

Run it next to the bot (as many as you like; they share the queue)::

    REDIS_URL=redis://localhost:6379/0 arq example_bot.worker.WorkerSettings

``WorkerSettings`` is built from the environment when arq asks for it, not at import: a
malformed ``REDIS_URL`` then stops the worker with one line (exit status 2), and modules
that only import this one (the demo, the bot) are not affected by it.

Jobs are JSON, not pickle: arq's default serializer is pickle, which would run whatever
code a job in Redis names. The bot's pool (``retry_pool``) and the worker must agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.constants import default_queue_name
from arq.worker import Worker, create_worker
from redis.asyncio import ConnectionPool

from codex_bot.config import ConfigurationError, redis_url_from_env
from codex_bot.redis import redeliver_event
from example_bot.settings import Settings

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


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


WORKER_OPTIONS: dict[str, Any] = {
    "functions": [redeliver_event],
    "job_serializer": dumps_job,
    "job_deserializer": loads_job,
    "max_jobs": 100,
    # redeliver_event asks arq to retry while the stream's Redis is unreachable (backoff up
    # to 60 s); 30 tries ride out about 25 minutes of outage before arq gives the job up.
    "max_tries": 30,
}
"""What every worker of this bot runs with; Redis and the queue come from the environment."""


def worker_settings(environ: Mapping[str, str] | None = None) -> type:
    """The arq settings class for ``REDIS_URL`` and ``ARQ_QUEUE`` of ``environ``.

    arq reads a settings class's own attributes only (not inherited ones), so every
    setting is set on the class itself.

    Args:
        environ: Where to read the variables; ``os.environ`` when None. An unset or empty
            ``REDIS_URL`` means ``redis://localhost:6379/0``.

    Raises:
        ConfigurationError: ``REDIS_URL`` is not a Redis URL.
    """
    env = os.environ if environ is None else environ
    url = redis_url_from_env("REDIS_URL", DEFAULT_REDIS_URL, environ=env)
    attributes = {
        **WORKER_OPTIONS,
        "redis_settings": RedisSettings.from_dsn(url),
        "queue_name": env.get("ARQ_QUEUE") or default_queue_name,
    }
    return type("WorkerSettings", (), attributes)


def __getattr__(name: str) -> Any:
    """``WorkerSettings``, for ``arq example_bot.worker.WorkerSettings``: built on request."""
    if name != "WorkerSettings":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    try:
        return worker_settings()
    except ConfigurationError as exc:
        print(f"{__name__}: {exc}", file=sys.stderr)  # arq's CLI would print a traceback
        raise SystemExit(2) from None


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
