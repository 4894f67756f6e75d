"""ARQ-backed retries: ``ArqRetryScheduler`` enqueues, ``redeliver_event`` puts the event back.

Job arguments are a stream name and a dict of strings, so arq's default serializer and
JSON job serializers both carry them; configure JSON (arq's default is pickle) on both the
pool and the worker. This module imports arq only when a redelivery has to be retried: the
pool is handed in and the task writes through ``ctx``.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from codex_bot.redis.codec import encode_payload, text
from codex_bot.redis.constants import ATTEMPT_FIELD, ORIGIN_FIELD, TYPE_FIELD
from codex_bot.redis.context import current_event

if TYPE_CHECKING:
    from arq.connections import ArqRedis

logger = logging.getLogger(__name__)

REDELIVER_TASK = "redeliver_event"
"""The arq function name ``ArqRetryScheduler`` enqueues."""
REDIS_CTX_KEY = "codex_redis"
"""``ctx`` key of the client ``redeliver_event`` writes through, when not arq's own Redis."""
DEFAULT_JOB_EXPIRES = 7 * 24 * 3600.0
"""Seconds a retry job may wait past its time for a worker (arq's own default is a day)."""

_REDELIVER_BACKOFF = 1.0
_REDELIVER_MAX_BACKOFF = 60.0


class ArqRetryScheduler:
    """``RetrySchedulerProtocol`` over an arq pool: one deferred ``redeliver_event`` job per retry.

    The job id names the stream, the entry that failed and the attempt, so scheduling the
    same retry twice (an entry redelivered after a crash failing again) enqueues one job.
    arq refuses an id while its job or its result exists (results live an hour by default),
    so the id must never repeat for a retry that is really new.

    Args:
        pool: An ``ArqRedis`` from ``arq.create_pool(...)``.
        queue_name: The arq queue the worker listens on; None uses the pool's default.
        job_prefix: Prefix of the job ids.
        expires: Seconds a job may wait past its time for a worker before arq drops it.

    Example:
        ```python
        pool = await create_pool(
            RedisSettings.from_dsn(REDIS_URL),
            job_serializer=lambda job: json.dumps(job).encode(),
            job_deserializer=json.loads,
        )
        dispatcher = BotRedisDispatcher(retry_scheduler=ArqRetryScheduler(pool))
        ```
    """

    def __init__(
        self,
        pool: ArqRedis,
        *,
        queue_name: str | None = None,
        job_prefix: str = "codex:retry",
        expires: float = DEFAULT_JOB_EXPIRES,
    ) -> None:
        self.pool = pool
        self.queue_name = queue_name
        self.job_prefix = job_prefix
        self.expires = expires

    def job_id(self, stream_name: str, payload: dict[str, Any]) -> str:
        """The arq job id of this retry: unique per stream, failed entry and attempt.

        It names the entry being handled (``current_event()``), so the same entry failing
        twice schedules one job, while a replayed copy of a dead letter, a new entry, gets
        its own. Outside a processor the event's ``codex.origin_id`` stands in for the
        entry; an event with neither gets a random id.
        """
        event = current_event()
        source = event.entry_id if event is not None else payload.get(ORIGIN_FIELD)
        attempt = payload.get(ATTEMPT_FIELD)
        if not source or attempt is None:
            return f"{self.job_prefix}:{stream_name}:{uuid.uuid4().hex}"
        return f"{self.job_prefix}:{stream_name}:{source}:{attempt}"

    async def schedule_retry(
        self, stream_name: str, payload: dict[str, Any], delay: float = 60
    ) -> None:
        """Enqueue ``redeliver_event`` deferred by ``delay`` seconds; a duplicate is a no-op.

        Args:
            stream_name: The stream the event goes back to.
            payload: The event with its ``codex.`` retry metadata.
            delay: Seconds to wait; rounded up, so the retry never comes back early.

        Raises:
            redis.exceptions.RedisError: arq's Redis could not be reached; the dispatcher
                then leaves the entry pending.
        """
        fields = encode_payload(payload)
        job_id = self.job_id(stream_name, payload)
        # arq rounds its clock to the millisecond when it enqueues and when it polls: one
        # more millisecond makes sure the job never runs before ``delay`` has passed
        defer = timedelta(milliseconds=max(math.ceil(float(delay) * 1000), 0) + 1)
        job = await self.pool.enqueue_job(
            REDELIVER_TASK,
            stream_name,
            fields,
            _job_id=job_id,
            _queue_name=self.queue_name,
            _defer_by=defer,
            _expires=defer + timedelta(seconds=self.expires),
        )
        if job is None:
            logger.info("retry %s is already scheduled or done; not scheduling it again", job_id)


async def redeliver_event(ctx: dict[str, Any], stream_name: str, fields: dict[str, str]) -> str:
    """The arq task: append the event back to its stream, where the processor handles it.

    List it in ``WorkerSettings.functions``. It writes through ``ctx["codex_redis"]`` when
    the worker's ``on_startup`` put a client there (needed when arq uses another Redis than
    the bot's stream), else through arq's own ``ctx["redis"]``. If that Redis cannot be
    reached or refuses the write, the job is retried by arq with backoff, up to the
    worker's ``max_tries``.

    Args:
        ctx: arq's job context.
        stream_name: The stream the event came from.
        fields: The entry's fields, ``codex.`` retry metadata included.

    Returns:
        The new entry id.

    Raises:
        arq.worker.Retry: the stream's Redis could not take the entry (unreachable,
            read-only, out of memory); after the worker's ``max_tries`` arq drops the job,
            so give the worker a generous ``max_tries`` (example_bot uses 30).
    """
    redis = ctx.get(REDIS_CTX_KEY) or ctx["redis"]
    try:
        entry_id = text(await redis.xadd(stream_name, fields))
    except RedisError as exc:  # down, read-only after a failover, OOM: all worth a retry
        from arq.worker import Retry  # noqa: PLC0415 - arq stays unimported until needed

        job_try = int(ctx.get("job_try") or 1)
        defer = min(_REDELIVER_BACKOFF * 2 ** min(job_try - 1, 16), _REDELIVER_MAX_BACKOFF)
        logger.warning(
            "cannot redeliver %s to %s (try %s), retrying in %.0fs: %r",
            fields.get(TYPE_FIELD),
            stream_name,
            job_try,
            defer,
            exc,
        )
        raise Retry(defer=defer) from exc
    logger.info(
        "redelivered %s attempt %s to %s as %s",
        fields.get(TYPE_FIELD),
        fields.get(ATTEMPT_FIELD),
        stream_name,
        entry_id,
    )
    return entry_id
