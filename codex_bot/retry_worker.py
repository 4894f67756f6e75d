"""The retry worker, ready to run: ``arq codex_bot.retry_worker.WorkerSettings``.

It serves the retries ``ArqRetryScheduler`` enqueues, with the same JSON job serializers as the
bot's ``create_retry_pool`` (a worker that cannot read the bot's jobs is the classic way to
lose every retry). It is configured from the environment:

- ``REDIS_URL``: the Redis arq uses (default ``redis://localhost:6379/0``); unset or empty
  means the default, a malformed one stops the worker with one line and exit status 2;
- ``ARQ_QUEUE``: the queue (arq's default ``arq:queue``), the same as the bot's;
- ``STREAMS_REDIS_URL``: the Redis the streams live in, when it is not ``REDIS_URL``'s, and
  ``STREAMS_REDIS_CLUSTER=1`` when that is a Redis Cluster (arq itself has no Cluster
  support: its own Redis stays a standalone or Sentinel one);
- ``RETRY_MAX_TRIES``: how often arq runs a job whose stream is unreachable (default 30,
  about 25 minutes of outage; a retry arq then gives up on is dead-lettered by the bot).

A restart or failover of arq's Redis does not stop the worker: it logs one WARNING, tries
again with backoff (``RECONNECT_TRIES``), and one INFO line once Redis answers. A long outage
(several minutes) ends it, for its supervisor to restart.

``WorkerSettings`` is built when arq asks for it, not at import, so importing this module
never fails; ``worker_settings(environ)`` builds it for other environments.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from arq.connections import RedisSettings
from arq.constants import default_queue_name
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codex_bot.config import ConfigurationError, redis_url_from_env
from codex_bot.redis.retry import (
    REDIS_CTX_KEY,
    json_job_deserializer,
    json_job_serializer,
    redeliver_event,
)

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_MAX_TRIES = 30
RECONNECT_TRIES = 20
"""How often a connection to arq's Redis, and then the command on it, is tried again, waiting
0.2 s, 0.4 s, ... up to 5 s in between. arq's own worker exits at the first failed poll; this
one rides out a restart or a failover (at least 80 s of outage; as the two levels of retries
multiply, a long outage ends it after several minutes, and its supervisor restarts it)."""

logger = logging.getLogger(__name__)


class _LoggedRetry(Retry):
    """redis-py's ``Retry``, saying once when arq's Redis goes away and once when it is back."""

    _down_since: float | None = None

    async def call_with_retry(
        self, do: Callable[[], Awaitable[Any]], fail: Callable[[Any], Any]
    ) -> Any:
        async def note(error: Any) -> None:
            if _LoggedRetry._down_since is None:
                _LoggedRetry._down_since = time.monotonic()
                logger.warning("arq's Redis cannot be reached (%r); retrying", error)
            await fail(error)

        result = await super().call_with_retry(do, note)
        if _LoggedRetry._down_since is not None:
            down, _LoggedRetry._down_since = time.monotonic() - _LoggedRetry._down_since, None
            logger.info("arq's Redis answers again after %.1fs", down)
        return result


WORKER_OPTIONS: dict[str, Any] = {
    "functions": [redeliver_event],
    "job_serializer": json_job_serializer,
    "job_deserializer": json_job_deserializer,
    "max_jobs": 100,
    "max_tries": DEFAULT_MAX_TRIES,
}
"""What every retry worker runs with; Redis, queue and ``max_tries`` come from the environment."""


def worker_settings(environ: Mapping[str, str] | None = None) -> type:
    """The arq settings class for the variables of ``environ`` (``os.environ`` when None).

    arq reads a settings class's own attributes only (not inherited ones), so every setting
    is set on the class itself.

    Raises:
        ConfigurationError: a URL is malformed or ``RETRY_MAX_TRIES`` is not a positive number.
    """
    env = os.environ if environ is None else environ
    url = redis_url_from_env("REDIS_URL", DEFAULT_REDIS_URL, environ=env)
    streams_url = redis_url_from_env("STREAMS_REDIS_URL", None, environ=env)
    redis_settings = RedisSettings.from_dsn(url)
    # OSError too: redis-py retries a refused connection only when it is listed
    redis_settings.retry_on_error = [RedisConnectionError, RedisTimeoutError, OSError]
    redis_settings.retry = _LoggedRetry(ExponentialBackoff(cap=5.0, base=0.1), RECONNECT_TRIES)
    attributes: dict[str, Any] = {
        **WORKER_OPTIONS,
        "redis_settings": redis_settings,
        "queue_name": env.get("ARQ_QUEUE") or default_queue_name,
        "max_tries": _max_tries(env.get("RETRY_MAX_TRIES")),
    }
    if streams_url is not None:
        cluster = (env.get("STREAMS_REDIS_CLUSTER") or "").lower() in {"1", "true", "yes"}
        attributes["on_startup"] = _streams_client(streams_url, cluster=cluster)
        attributes["on_shutdown"] = _close_streams_client
    return type("WorkerSettings", (), attributes)


def _max_tries(raw: str | None) -> int:
    if not raw:
        return DEFAULT_MAX_TRIES
    if not raw.isdigit() or int(raw) < 1:
        msg = f"RETRY_MAX_TRIES={raw!r} is not a positive whole number"
        raise ConfigurationError(msg)
    return int(raw)


def _streams_client(url: str, *, cluster: bool) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        ctx[REDIS_CTX_KEY] = RedisCluster.from_url(url) if cluster else Redis.from_url(url)

    return on_startup


async def _close_streams_client(ctx: dict[str, Any]) -> None:
    client = ctx.pop(REDIS_CTX_KEY, None)
    if client is not None:
        await client.aclose()


def __getattr__(name: str) -> Any:
    """``WorkerSettings``, for ``arq codex_bot.retry_worker.WorkerSettings``: built on request."""
    if name != "WorkerSettings":
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    try:
        return worker_settings()
    except ConfigurationError as exc:
        print(f"{__name__}: {exc}", file=sys.stderr)  # arq's CLI would print a traceback
        raise SystemExit(2) from None
