"""ARQ-backed retries: ``ArqRetryScheduler`` enqueues, ``redeliver_event`` puts the event back.

This module imports no arq at run time: the pool is handed in, and the task only uses
``ctx["redis"]``. Job arguments are a stream name and a dict of strings, so arq's default
serializer and JSON job serializers both carry them.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from codex_bot.redis.codec import encode_payload, text
from codex_bot.redis.constants import ATTEMPT_FIELD, ORIGIN_FIELD

if TYPE_CHECKING:
    from arq.connections import ArqRedis

logger = logging.getLogger(__name__)

REDELIVER_TASK = "redeliver_event"


class ArqRetryScheduler:
    """``RetrySchedulerProtocol`` over an arq pool: one deferred job per retry.

    The job id names the stream, the event's first entry id and the attempt, so scheduling
    the same retry twice (a redelivered entry failing again) enqueues one job.

    Args:
        pool: An ``ArqRedis`` from ``arq.create_pool(...)``.
        queue_name: The arq queue the worker listens on; None uses the pool's default.
        job_prefix: Prefix of the job ids.

    Example:
        ```python
        pool = await create_pool(RedisSettings(), job_serializer=..., job_deserializer=...)
        dispatcher = BotRedisDispatcher(retry_scheduler=ArqRetryScheduler(pool))
        ```
    """

    def __init__(
        self, pool: ArqRedis, *, queue_name: str | None = None, job_prefix: str = "codex:retry"
    ) -> None:
        self.pool = pool
        self.queue_name = queue_name
        self.job_prefix = job_prefix

    def job_id(self, stream_name: str, payload: dict[str, Any]) -> str:
        """The arq job id of this retry: unique per event and attempt."""
        origin = payload.get(ORIGIN_FIELD)
        attempt = payload.get(ATTEMPT_FIELD)
        if not origin or attempt is None:
            return f"{self.job_prefix}:{stream_name}:{uuid.uuid4().hex}"
        return f"{self.job_prefix}:{stream_name}:{origin}:{attempt}"

    async def schedule_retry(
        self, stream_name: str, payload: dict[str, Any], delay: float = 60
    ) -> None:
        """Enqueue ``redeliver_event`` deferred by ``delay`` seconds.

        Raises:
            redis.exceptions.RedisError: arq's Redis could not be reached; the dispatcher
                then leaves the entry pending.
        """
        fields = encode_payload(payload)
        job_id = self.job_id(stream_name, payload)
        job = await self.pool.enqueue_job(
            REDELIVER_TASK,
            stream_name,
            fields,
            _job_id=job_id,
            _defer_by=max(float(delay), 0.0),
            _queue_name=self.queue_name,
        )
        if job is None:
            logger.info("retry %s was already scheduled", job_id)


async def redeliver_event(ctx: dict[str, Any], stream_name: str, fields: dict[str, str]) -> str:
    """The arq task: append the event back to its stream, where the processor handles it.

    List it in ``WorkerSettings.functions``. It writes through ``ctx["codex_redis"]`` when
    the worker's ``on_startup`` put a client there, else through arq's own ``ctx["redis"]``
    (so the worker must use the Redis the bot consumes).

    Returns:
        The new entry id.
    """
    redis = ctx.get("codex_redis") or ctx["redis"]
    entry_id = text(await redis.xadd(stream_name, fields))
    logger.info(
        "redelivered %s attempt %s to %s as %s",
        fields.get("type"),
        fields.get(ATTEMPT_FIELD),
        stream_name,
        entry_id,
    )
    return entry_id
