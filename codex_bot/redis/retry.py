"""ARQ-backed retries: ``ArqRetryScheduler`` enqueues, ``redeliver_event`` puts the event back.

Jobs are JSON (``json_job_serializer``/``json_job_deserializer``), never pickle: arq's default
serializer is pickle, which runs whatever code a job stored in Redis names, and a bot and a
worker that disagree on the serializer lose every retry. ``create_retry_pool(url)`` builds the
bot's pool with them, and ``ArqRetryScheduler`` refuses a pool that would pickle; the worker is
``arq codex_bot.retry_worker.WorkerSettings``. Every retry is also written down in the retry
ledger (``codex_bot.redis.ledger``) beside its stream until it is back, so a job arq cannot
run, gives up on or drops ends in the dead-letter stream instead of vanishing.

This module imports arq only when it builds a pool or a redelivery has to be retried.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from codex_bot.redis.codec import encode_payload
from codex_bot.redis.constants import ATTEMPT_FIELD, ORIGIN_FIELD, TYPE_FIELD
from codex_bot.redis.context import current_event
from codex_bot.redis.exceptions import CodexBotError
from codex_bot.redis.ledger import LedgerEntry, RetryLedger, now_ms

if TYPE_CHECKING:
    from arq.connections import ArqRedis

logger = logging.getLogger(__name__)

REDELIVER_TASK = "redeliver_event"
"""The arq function name ``ArqRetryScheduler`` enqueues."""
REDIS_CTX_KEY = "codex_redis"
"""``ctx`` key of the client ``redeliver_event`` writes through, when not arq's own Redis."""
DEFAULT_JOB_EXPIRES = 7 * 24 * 3600.0
"""Seconds a retry job may wait past its time for a worker (arq's own default is a day)."""

DEFAULT_CHECK_AFTER = 60.0
"""Seconds after its time a retry's job is looked at, and then how often, by the claim sweep."""

_REDELIVER_BACKOFF = 1.0
_REDELIVER_MAX_BACKOFF = 60.0


def json_job_serializer(job: dict[str, Any]) -> bytes:
    """arq ``job_serializer``: compact JSON (a retry job's arguments are strings)."""
    return json.dumps(job, separators=(",", ":")).encode()


def json_job_deserializer(data: bytes) -> dict[str, Any]:
    """arq ``job_deserializer``: JSON."""
    job: dict[str, Any] = json.loads(data)
    return job


class PickleRefusedError(CodexBotError):
    """The arq pool would serialize jobs with pickle (arq's default).

    Build the pool with ``create_retry_pool(url)``, or pass
    ``job_serializer=json_job_serializer, job_deserializer=json_job_deserializer`` to arq's
    ``create_pool``, and run the worker as ``arq codex_bot.retry_worker.WorkerSettings``.
    """


def create_retry_pool(url: str, *, queue_name: str | None = None) -> ArqRedis:
    """The bot's arq pool for ``ArqRetryScheduler``: JSON jobs, connected on first use.

    Unlike arq's ``create_pool``, which pings Redis and gives up after a few tries (the bot
    would die at start while Redis is down), this pool connects when a retry is scheduled;
    if Redis is down then, the entry stays pending and comes back. Close it with ``aclose()``.

    Args:
        url: ``redis://...`` of the Redis arq uses (usually the streams' Redis).
        queue_name: The arq queue the retry worker serves; arq's default when None.

    Raises:
        ConfigurationError: ``url`` is not a Redis URL (a ``ValueError`` too); redis-py
            would read some of those, such as a database number that is not a number,
            as database 0.
    """
    from arq.connections import ArqRedis  # noqa: PLC0415 - arq stays unimported until needed
    from arq.constants import default_queue_name  # noqa: PLC0415
    from redis.asyncio import ConnectionPool  # noqa: PLC0415

    from codex_bot.config import check_redis_url  # noqa: PLC0415 - it imports this package

    pool = ArqRedis(
        connection_pool=ConnectionPool.from_url(check_redis_url(url, "url")),
        job_serializer=json_job_serializer,
        job_deserializer=json_job_deserializer,
        default_queue_name=queue_name or default_queue_name,
    )
    pool.auto_close_connection_pool = True  # aclose() closes the connections too
    return pool


def _refuse_pickle(pool: ArqRedis) -> ArqRedis:
    """``pool``, unless it would serialize jobs with pickle (arq's default)."""
    if getattr(pool, "job_serializer", None) is None or (
        getattr(pool, "job_deserializer", None) is None
    ):
        msg = (
            "the arq pool would pickle retry jobs (arq's default): build it with "
            "codex_bot.redis.create_retry_pool(url), or pass job_serializer="
            "json_job_serializer and job_deserializer=json_job_deserializer"
        )
        raise PickleRefusedError(msg)
    return pool


class ArqRetryScheduler:
    """``RetrySchedulerProtocol`` over an arq pool: one deferred ``redeliver_event`` job per retry.

    The job id names the stream, the entry that failed and the attempt, so scheduling the
    same retry twice (an entry redelivered after a crash failing again) enqueues one job.
    arq refuses an id while its job or its result exists (results live an hour by default),
    so the id must never repeat for a retry that is really new.

    ``schedule_retry`` returns the retry as a ``LedgerEntry``: the processor writes it into
    the retry ledger beside the stream before it acknowledges the failed entry,
    ``redeliver_event`` strikes it off as it puts the event back, and the processor's claim
    sweep dead-letters a retry that is overdue and no longer held by arq (a worker that
    cannot read the job, gave up on it, or a job that expired).

    Args:
        pool: An arq pool with JSON job serializers, from ``create_retry_pool(url)``.
        queue_name: The arq queue the worker listens on; None uses the pool's default.
        job_prefix: Prefix of the job ids.
        expires: Seconds a job may wait past its time for a worker before arq drops it.
        check_after: Seconds after its time a retry is looked at, and then how often. When
            arq uses another Redis than the streams, whether arq still holds a job cannot be
            asked, and a lost retry is found once ``expires`` has passed.

    Raises:
        PickleRefusedError: the pool would pickle jobs.

    Example:
        ```python
        pool = create_retry_pool(REDIS_URL)
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
        check_after: float = DEFAULT_CHECK_AFTER,
    ) -> None:
        self.pool = _refuse_pickle(pool)
        self.queue_name = queue_name
        self.job_prefix = job_prefix
        self.expires = expires
        self.check_after = check_after

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
    ) -> LedgerEntry:
        """Enqueue ``redeliver_event`` deferred by ``delay`` seconds; a duplicate is a no-op.

        Args:
            stream_name: The stream the event goes back to.
            payload: The event with its ``codex.`` retry metadata.
            delay: Seconds to wait; rounded up, so the retry never comes back early.

        Returns:
            The retry, for the processor to write into the retry ledger.

        Raises:
            redis.exceptions.RedisError: arq's Redis could not be reached; the dispatcher
                then leaves the entry pending.
        """
        fields = encode_payload(payload)
        job_id = self.job_id(stream_name, payload)
        # arq rounds its clock to the millisecond when it enqueues and when it polls: one
        # more millisecond makes sure the job never runs before ``delay`` has passed
        defer = timedelta(milliseconds=max(math.ceil(float(delay) * 1000), 0) + 1)
        entry = self._ledger_entry(job_id, fields, defer)
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
        return entry

    def _ledger_entry(self, job_id: str, fields: dict[str, str], defer: timedelta) -> LedgerEntry:
        from arq.constants import (  # noqa: PLC0415 - the pool's owner has arq
            in_progress_key_prefix,
            job_key_prefix,
            result_key_prefix,
        )

        due = now_ms() + int(defer.total_seconds() * 1000)
        check_ms = int(self.check_after * 1000)
        event = current_event()
        return LedgerEntry(
            job_id=job_id,
            fields=fields,
            source_id=event.entry_id if event is not None else "",
            due_ms=due,
            give_up_ms=due + int(self.expires * 1000) + check_ms,
            check_every_ms=check_ms,
            alive_keys=(job_key_prefix + job_id, in_progress_key_prefix + job_id),
            result_key=result_key_prefix + job_id,
        )


async def redeliver_event(ctx: dict[str, Any], stream_name: str, fields: dict[str, str]) -> str:
    """The arq task: append the event back to its stream, where the processor handles it.

    ``arq codex_bot.retry_worker.WorkerSettings`` lists it. It writes through
    ``ctx["codex_redis"]`` when the worker's ``on_startup`` put a client there (needed when
    arq uses another Redis than the bot's stream), else through arq's own ``ctx["redis"]``.
    The event goes back and its retry is struck off the ledger in one script; a job arq runs
    a second time, or one whose retry was dead-lettered as lost, adds nothing. If that Redis
    cannot be reached or refuses the write, the job is retried by arq with backoff, up to the
    worker's ``max_tries``; a retry arq gives up on is dead-lettered by the processor.

    Args:
        ctx: arq's job context.
        stream_name: The stream the event came from.
        fields: The entry's fields, ``codex.`` retry metadata included.

    Returns:
        The new entry id, or ``""`` when nothing was added.

    Raises:
        arq.worker.Retry: the stream's Redis could not take the entry (unreachable,
            read-only, out of memory).
    """
    redis = ctx.get(REDIS_CTX_KEY) or ctx["redis"]
    job_id = str(ctx.get("job_id") or "")
    try:
        entry_id = await RetryLedger(redis).redeliver(stream_name, job_id, fields)
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
    if entry_id is None:
        logger.info("retry %s was already delivered or dead-lettered; nothing to add", job_id)
        return ""
    logger.info(
        "redelivered %s attempt %s to %s as %s",
        fields.get(TYPE_FIELD),
        fields.get(ATTEMPT_FIELD),
        stream_name,
        entry_id,
    )
    return entry_id
