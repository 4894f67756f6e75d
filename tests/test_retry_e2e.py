"""Retries end to end: processor + dispatcher + a real arq Worker in-process + redis-server.

Every test drives the whole trip a retry takes in production: the processor reads the
entry, the dispatcher runs the handlers and asks ``ArqRetryScheduler`` for a retry, an arq
worker runs ``redeliver_event`` when the retry is due, and the processor reads the event
again. Assertions are on outcomes: what handlers saw and when, what is pending (XPENDING),
what is in ``<stream>:dead``, what is left in arq's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramForbiddenError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import SendMessage
from arq import Worker
from arq.connections import ArqRedis, RedisSettings
from arq.worker import create_worker
from redis.asyncio import Redis

from codex_bot.ops import StreamOps
from codex_bot.redis import (
    ArqRetryScheduler,
    BotRedisDispatcher,
    DispatchReport,
    RedisStreamProcessor,
    RetryDecision,
    StreamProducer,
    create_retry_pool,
    current_event,
    json_job_deserializer,
    json_job_serializer,
    redeliver_event,
)
from codex_bot.redis.constants import (
    ATTEMPT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_HANDLER_FIELD,
    DEAD_REASON_FIELD,
    DEAD_SOURCE_ID_FIELD,
    ORIGIN_FIELD,
)
from codex_bot.redis.dispatcher import handler_name
from codex_bot.retry_worker import worker_settings
from codex_bot.testing.redis_server import RedisServer
from tests._helpers import running_processor
from tests.conftest import nothing_pending, pending_count, wait_for, xlen_is

METHOD = SendMessage(chat_id=7, text="hello")
GROUP = "bot"
JITTER = 1.1 + 1e-9
"""Jitter adds at most 10% (plus float rounding)."""


WORKER_SERIALIZERS = {
    "json": (json_job_serializer, json_job_deserializer),
    "pickle": (None, None),  # arq's default: a worker that cannot read the bot's jobs
}


# -- an arq worker and a bot, in this process -------------------------------------------


async def _start_worker(worker: Worker) -> asyncio.Task[None]:
    task = asyncio.create_task(worker.async_run())
    await wait_for(lambda: worker._pool is not None or task.done(), message="arq worker up")
    if task.done():
        await task  # raises what stopped it
    return task


async def _stop_worker(worker: Worker, task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with warnings.catch_warnings():
        # Worker.close() calls redis-py's deprecated close(); the warning is arq's to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        await worker.close()


@dataclass
class Arq:
    """The bot's side of arq (pool and scheduler) and a running worker."""

    pool: ArqRedis
    scheduler: ArqRetryScheduler
    queue: str

    async def idle(self) -> bool:
        """No retry is waiting or running."""
        return await self.pool.zcard(self.queue) == 0


@contextlib.asynccontextmanager
async def running_arq(
    url: str,
    serializer: str = "json",
    *,
    worker_ctx: dict[str, Any] | None = None,
    start_worker: bool = True,
    max_tries: int = 5,
    check_after: float = 60.0,
    expires: float = 7 * 24 * 3600.0,
) -> AsyncIterator[tuple[Arq, Callable[[], Awaitable[None]]]]:
    """The bot's arq pool on ``url`` and a worker on its own queue; yields ``(arq, start_worker)``.

    ``serializer`` is the worker's: ``"pickle"`` makes a worker that cannot read the bot's
    JSON jobs.
    """
    dumps, loads = WORKER_SERIALIZERS[serializer]
    queue = f"arq:test:{uuid.uuid4().hex[:8]}"
    settings = RedisSettings.from_dsn(url)
    pool = create_retry_pool(url, queue_name=queue)
    worker = Worker(
        functions=[redeliver_event],
        queue_name=queue,
        redis_settings=settings,
        burst=False,
        poll_delay=0.01,
        handle_signals=False,
        job_serializer=dumps,
        job_deserializer=loads,
        ctx=worker_ctx,
        max_tries=max_tries,
    )
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(await _start_worker(worker))

    if start_worker:
        await start()
    try:
        scheduler = ArqRetryScheduler(pool, check_after=check_after, expires=expires)
        yield Arq(pool, scheduler, queue), start
    finally:
        for task in tasks:
            await _stop_worker(worker, task)
        await pool.aclose()


@dataclass
class Calls:
    """What one handler saw: payloads, times, attempts, entry ids."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    entry_ids: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    deliveries: list[int] = field(default_factory=list)

    def record(self, payload: dict[str, Any]) -> int:
        """Note the call; return its attempt number."""
        self.times.append(time.monotonic())
        self.payloads.append(payload)
        event = current_event()
        assert event is not None
        self.attempts.append(event.attempt)
        self.entry_ids.append(event.entry_id)
        self.origins.append(event.origin_id)
        self.deliveries.append(event.deliveries)
        return event.attempt

    def __len__(self) -> int:
        return len(self.times)

    def gaps(self) -> list[float]:
        return [later - earlier for earlier, later in itertools.pairwise(self.times)]


@contextlib.asynccontextmanager
async def dispatching(
    redis: Redis,
    stream: str,
    dispatcher: BotRedisDispatcher,
    reports: list[DispatchReport] | None = None,
    **options: Any,
) -> AsyncIterator[RedisStreamProcessor]:
    """A processor on ``stream`` feeding ``dispatcher``; keeps each ``DispatchReport``."""
    kept = reports if reports is not None else []

    async def callback(payload: dict[str, Any], stream_name: str) -> DispatchReport:
        report = await dispatcher.process_message(payload, stream_name=stream_name)
        kept.append(report)
        return report

    async with running_processor(redis, stream, callback, **options) as processor:
        yield processor


async def _settled(redis: Redis, stream: str, arq: Arq) -> bool:
    """Nothing pending in the group and no retry left in arq's queue."""
    return await pending_count(redis, stream) == 0 and await arq.idle()


async def _dead(redis: Redis, stream: str) -> list[dict[str, str]]:
    return [fields for _, fields in await redis.xrange(stream + ":dead")]


# -- behaviour --------------------------------------------------------------------------


async def test_a_retry_runs_only_the_failed_handlers_until_they_succeed(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    steady, twice, once = Calls(), Calls(), Calls()
    reports: list[DispatchReport] = []
    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(
            arq.scheduler, max_attempts=3, retry_delay=0.1, max_retry_delay=10
        )

        @dispatcher.on_message("order.paid")
        async def notify(payload: dict[str, Any], container: Any) -> None:
            steady.record(payload)

        @dispatcher.on_message("order.paid")
        async def fails_twice(payload: dict[str, Any], container: Any) -> None:
            if twice.record(payload) < 3:
                raise TelegramServerError(method=METHOD, message="Bad Gateway")

        @dispatcher.on_message("order.paid")
        async def fails_once(payload: dict[str, Any], container: Any) -> None:
            if once.record(payload) < 2:
                raise ConnectionError("backend down")

        dispatcher.setup(container=None)
        data = {"chat_id": 7, "items": [{"sku": "A", "qty": 2}], "note": "json:kept as text"}
        async with dispatching(redis, stream, dispatcher, reports):
            first_id = await StreamProducer(redis, stream).add_event("order.paid", data)
            await wait_for(lambda: len(twice) == 3, message="third attempt of fails_twice")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    # max_attempts=3: one delivery and two retries; succeeded handlers never run again
    assert (len(steady), len(once), len(twice)) == (1, 2, 3)
    assert twice.attempts == [1, 2, 3]
    assert once.attempts == [1, 2]
    # handlers see the user's payload only, on every attempt
    event = {"type": "order.paid", **data}
    assert steady.payloads == [event]
    assert twice.payloads == [event] * 3
    # the attempt count travelled through arq and the stream; the origin id with it
    assert twice.origins == [first_id] * 3
    assert twice.entry_ids[0] == first_id
    assert len(set(twice.entry_ids)) == 3
    assert once.entry_ids == twice.entry_ids[:2]
    # retry n comes back no earlier than retry_delay * 2**(n-1) (+ up to 10% jitter)
    gap1, gap2 = twice.gaps()
    assert gap1 >= 0.1
    assert gap2 >= 0.2
    delays = [r.retry_delay for r in reports if r.retry_delay is not None]
    assert len(delays) == 2
    assert 0.1 <= delays[0] <= 0.1 * JITTER
    assert 0.2 <= delays[1] <= 0.2 * JITTER
    assert [r.retried_handlers for r in reports] == [
        (handler_name(fails_twice), handler_name(fails_once)),
        (handler_name(fails_twice),),
        (),
    ]
    assert await redis.xlen(stream) == 3
    assert await _dead(redis, stream) == []


async def test_after_max_attempts_the_event_is_dead_lettered_with_the_reason(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    steady, broken = Calls(), Calls()
    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=3, retry_delay=0.05)

        @dispatcher.on_message("order.paid")
        async def notify(payload: dict[str, Any], container: Any) -> None:
            steady.record(payload)

        @dispatcher.on_message("order.paid")
        async def charge(payload: dict[str, Any], container: Any) -> None:
            broken.record(payload)
            raise RuntimeError("payment service down")

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            first_id = await StreamProducer(redis, stream).add_event(
                "order.paid", {"chat_id": 7, "amount": 10.5}
            )
            dead = await wait_for(lambda: _dead(redis, stream), message="dead letter")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    assert len(steady) == 1
    assert broken.attempts == [1, 2, 3]
    gap1, gap2 = broken.gaps()
    assert gap1 >= 0.05
    assert gap2 >= 0.1
    assert len(dead) == 1
    letter = dead[0]
    # the original payload, as it was on the stream
    assert letter["type"] == "order.paid"
    assert letter["chat_id"] == "json:7"
    assert letter["amount"] == "json:10.5"
    assert letter[DEAD_HANDLER_FIELD] == handler_name(charge)
    assert letter[DEAD_ERROR_FIELD] == "RuntimeError: payment service down"
    assert letter[DEAD_REASON_FIELD] == "gave up after 3 attempts (max_attempts=3)"
    assert letter[DEAD_ATTEMPTS_FIELD] == "3"
    assert letter[DEAD_SOURCE_ID_FIELD] == broken.entry_ids[-1]
    assert letter[ORIGIN_FIELD] == first_id
    assert letter[ATTEMPT_FIELD] == "json:3"


@pytest.mark.parametrize(
    ("error", "described"),
    [
        (
            TelegramForbiddenError(method=METHOD, message="Forbidden: bot was blocked by the user"),
            "TelegramForbiddenError: Forbidden: bot was blocked by the user",
        ),
        (
            TelegramBadRequest(method=METHOD, message="Bad Request: chat not found"),
            "TelegramBadRequest: Bad Request: chat not found",
        ),
    ],
    ids=["blocked", "chat-not-found"],
)
async def test_telegram_errors_that_cannot_succeed_are_dead_lettered_at_once(
    redis_server: RedisServer, redis: Redis, stream: str, error: Exception, described: str
) -> None:
    calls = Calls()
    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=5, retry_delay=0.05)

        @dispatcher.on_message("reminder.due")
        async def remind(payload: dict[str, Any], container: Any) -> None:
            calls.record(payload)
            raise error

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            entry_id = await StreamProducer(redis, stream).add_event("reminder.due", {"chat_id": 7})
            dead = await wait_for(lambda: _dead(redis, stream), message="dead letter")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")
        assert await arq.pool.keys("arq:job:*") == []  # no retry was ever scheduled

    assert calls.attempts == [1]
    assert len(dead) == 1
    assert dead[0][DEAD_ERROR_FIELD] == described
    assert dead[0][DEAD_ATTEMPTS_FIELD] == "1"
    assert dead[0][DEAD_SOURCE_ID_FIELD] == entry_id
    assert dead[0][DEAD_HANDLER_FIELD] == handler_name(remind)
    assert await redis.xlen(stream) == 1


async def test_flood_control_is_retried_after_telegrams_retry_after(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    calls = Calls()
    reports: list[DispatchReport] = []
    async with running_arq(redis_server.url) as (arq, _):
        # the backoff would bring it back after 0.05 s; Telegram asks for 1 s
        dispatcher = BotRedisDispatcher(arq.scheduler, retry_delay=0.05)

        @dispatcher.on_message("broadcast.part")
        async def send(payload: dict[str, Any], container: Any) -> None:
            calls.record(payload)
            if len(calls) == 1:
                raise TelegramRetryAfter(
                    method=METHOD, message="Too Many Requests: retry after 1", retry_after=1
                )

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher, reports):
            await StreamProducer(redis, stream).add_event("broadcast.part", {"chat_id": 7})
            await wait_for(lambda: len(calls) == 2, message="second attempt")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    assert calls.attempts == [1, 1]  # flood control uses no attempt
    assert calls.gaps()[0] >= 1.0
    assert reports[0].retry_delay is not None
    assert 1.0 <= reports[0].retry_delay <= 1.0 * JITTER
    assert await _dead(redis, stream) == []


async def test_a_long_flood_is_retried_without_using_attempts_until_delivered(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    calls = Calls()
    async with running_arq(redis_server.url) as (arq, _):
        # two attempts in all, yet five floods in a row do not use them up
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=2, retry_delay=0.05)

        @dispatcher.on_message("broadcast.part")
        async def send(payload: dict[str, Any], container: Any) -> None:
            if len(calls) < 5:
                calls.record(payload)
                raise TelegramRetryAfter(
                    method=METHOD, message="Too Many Requests: retry after 0", retry_after=0
                )
            calls.record(payload)

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            await StreamProducer(redis, stream).add_event("broadcast.part", {"chat_id": 7})
            await wait_for(lambda: len(calls) == 6, message="the delivery after five floods")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")
    assert calls.attempts == [1] * 6
    assert await _dead(redis, stream) == []


async def test_flood_control_dead_letters_only_past_max_flood_delay(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    calls = Calls()
    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_flood_delay=1.5)

        @dispatcher.on_message("broadcast.part")
        async def send(payload: dict[str, Any], container: Any) -> None:
            calls.record(payload)
            raise TelegramRetryAfter(
                method=METHOD, message="Too Many Requests: retry after 1", retry_after=1
            )

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            await StreamProducer(redis, stream).add_event("broadcast.part", {"chat_id": 7})
            dead = await wait_for(lambda: _dead(redis, stream), message="the dead letter")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")
    assert len(calls) == 2  # waited 1 s once; a second second would pass the 1.5 s bound
    assert dead[0][DEAD_REASON_FIELD] == (
        "flood control kept it waiting 2s in all (max_flood_delay=2)"
    )


async def test_network_and_server_errors_follow_the_backoff(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    calls = Calls()
    reports: list[DispatchReport] = []
    errors = [
        TelegramServerError(method=METHOD, message="Internal Server Error"),
        TelegramNetworkError(method=METHOD, message="HTTP Client says - ServerDisconnectedError"),
    ]
    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=3, retry_delay=0.1)

        @dispatcher.on_message("x")
        async def send(payload: dict[str, Any], container: Any) -> None:
            attempt = calls.record(payload)
            if attempt <= len(errors):
                raise errors[attempt - 1]

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher, reports):
            await StreamProducer(redis, stream).add_event("x", {"chat_id": 7})
            await wait_for(lambda: len(calls) == 3, message="third attempt")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    assert calls.attempts == [1, 2, 3]
    gap1, gap2 = calls.gaps()
    assert gap1 >= 0.1
    assert gap2 >= 0.2
    delays = [r.retry_delay for r in reports[:2]]
    assert delays[0] is not None
    assert delays[1] is not None
    assert 0.1 <= delays[0] <= 0.1 * JITTER
    assert 0.2 <= delays[1] <= 0.2 * JITTER
    assert await _dead(redis, stream) == []


async def test_a_custom_classifier_decides_retries_and_dead_letters(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    calls = Calls()

    def classifier(exc: BaseException) -> RetryDecision:
        if isinstance(exc, ValueError):
            return RetryDecision(False, reason="the backend sent an invalid amount")
        return RetryDecision(True, delay=0.15)

    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(
            arq.scheduler, retry_delay=30.0, max_attempts=5, classifier=classifier
        )

        @dispatcher.on_message("x")
        async def handle(payload: dict[str, Any], container: Any) -> None:
            if calls.record(payload) == 1:
                raise KeyError("amount")
            raise ValueError("amount must be positive")

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            await StreamProducer(redis, stream).add_event("x", {"amount": -1})
            dead = await wait_for(lambda: _dead(redis, stream), message="dead letter")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    assert calls.attempts == [1, 2]
    assert calls.gaps()[0] >= 0.15  # the classifier's delay, not the 30 s backoff
    assert dead[0][DEAD_REASON_FIELD] == "the backend sent an invalid amount"
    assert dead[0][DEAD_ERROR_FIELD] == "ValueError: amount must be positive"
    assert dead[0][DEAD_ATTEMPTS_FIELD] == "2"


@pytest.mark.redis_versions
async def test_when_arq_is_down_the_entry_stays_pending_and_comes_back(
    fresh_server: RedisServer, redis: Redis, stream: str
) -> None:
    """ARQ's Redis (a second server) is down: nothing is ACKed until a retry is scheduled."""
    steady, flaky = Calls(), Calls()
    async with running_arq(
        fresh_server.url, worker_ctx={"codex_redis": redis}, start_worker=False
    ) as (arq, start_worker):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=3, retry_delay=0.05)

        @dispatcher.on_message("x")
        async def notify(payload: dict[str, Any], container: Any) -> None:
            steady.record(payload)

        @dispatcher.on_message("x")
        async def send(payload: dict[str, Any], container: Any) -> None:
            if flaky.record(payload) == 1:
                raise TelegramNetworkError(method=METHOD, message="timeout")

        dispatcher.setup(container=None)
        fresh_server.stop()
        async with dispatching(
            redis,
            stream,
            dispatcher,
            claim_min_idle_ms=100,
            claim_interval=0.05,
            max_deliveries=1000,
        ):
            entry_id = await StreamProducer(redis, stream).add_event("x", {"chat_id": 7})
            await wait_for(lambda: len(flaky) >= 3, message="redeliveries through the claim")
            # still pending, never ACKed, never dead-lettered, and handled by nobody else
            rows = await redis.xpending_range(stream, GROUP, "-", "+", 10)
            assert [row["message_id"] for row in rows] == [entry_id]
            assert rows[0]["times_delivered"] >= 3
            assert await _dead(redis, stream) == []

            fresh_server.start()
            await start_worker()
            await wait_for(lambda: 2 in flaky.attempts, message="the retry")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    # the handler that succeeded the first time was not run again on the redeliveries
    assert steady.attempts == [1]
    assert flaky.attempts[-1] == 2
    assert set(flaky.attempts[:-1]) == {1}
    assert flaky.deliveries[:3] == [1, 2, 3]
    assert flaky.entry_ids[:-1] == [entry_id] * (len(flaky) - 1)
    assert flaky.origins[-1] == entry_id
    assert await _dead(redis, stream) == []
    assert await redis.xlen(stream) == 2


@pytest.mark.redis_versions
async def test_without_a_scheduler_the_entry_stays_pending_until_max_deliveries(
    redis: Redis, stream: str
) -> None:
    steady, broken = Calls(), Calls()
    dispatcher = BotRedisDispatcher()

    @dispatcher.on_message("x")
    async def notify(payload: dict[str, Any], container: Any) -> None:
        steady.record(payload)

    @dispatcher.on_message("x")
    async def send(payload: dict[str, Any], container: Any) -> None:
        broken.record(payload)
        raise RuntimeError("down")

    dispatcher.setup(container=None)
    async with dispatching(
        redis, stream, dispatcher, claim_min_idle_ms=200, claim_interval=0.05, max_deliveries=3
    ):
        entry_id = await StreamProducer(redis, stream).add_event("x", {"chat_id": 7})
        await wait_for(lambda: len(broken) == 1, message="first delivery")
        assert await pending_count(redis, stream) == 1
        dead = await wait_for(lambda: _dead(redis, stream), message="parked")
        await wait_for(lambda: nothing_pending(redis, stream), message="acked")

    assert broken.deliveries == [1, 2, 3]
    assert broken.entry_ids == [entry_id] * 3
    assert steady.deliveries == [1]
    assert len(dead) == 1
    assert dead[0][DEAD_REASON_FIELD] == "delivered 4 times (max_deliveries=3)"
    assert dead[0][DEAD_SOURCE_ID_FIELD] == entry_id
    assert dead[0]["chat_id"] == "json:7"


async def test_the_same_retry_scheduled_twice_is_delivered_once(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    payload = {"type": "x", ATTEMPT_FIELD: 2, ORIGIN_FIELD: "1-0", "chat_id": 7}
    async with running_arq(redis_server.url) as (arq, _):
        await arq.scheduler.schedule_retry(stream, payload, delay=0.05)
        await arq.scheduler.schedule_retry(stream, payload, delay=0.05)
        await wait_for(lambda: redis.exists(stream), message="redelivery")
        await wait_for(arq.idle, message="job done")
        # the result is kept (an hour by default), so a late duplicate is refused too
        await arq.scheduler.schedule_retry(stream, payload, delay=0)
        assert await arq.idle()
        await arq.scheduler.schedule_retry(stream, {**payload, ATTEMPT_FIELD: 3}, delay=0)
        await wait_for(lambda: xlen_is(redis, stream, 2), message="the next attempt")
        await wait_for(arq.idle, message="job done")

    entries = await redis.xrange(stream)
    assert [fields[ATTEMPT_FIELD] for _, fields in entries] == ["json:2", "json:3"]


async def test_the_ready_worker_settings_run_a_retry(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    queue = f"arq:test:{uuid.uuid4().hex[:8]}"
    settings = worker_settings({"REDIS_URL": redis_server.url, "ARQ_QUEUE": queue})
    calls = Calls()
    # what `arq codex_bot.retry_worker.WorkerSettings` does, minus the signal handlers pytest owns
    worker = create_worker(settings, handle_signals=False, poll_delay=0.01)
    task = await _start_worker(worker)
    pool = create_retry_pool(redis_server.url, queue_name=queue)
    try:
        dispatcher = BotRedisDispatcher(ArqRetryScheduler(pool), max_attempts=3, retry_delay=0.05)

        @dispatcher.on_message("x")
        async def send(payload: dict[str, Any], container: Any) -> None:
            if calls.record(payload) == 1:
                raise TelegramNetworkError(method=METHOD, message="timeout")

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            await StreamProducer(redis, stream).add_event("x", {"chat_id": 7})
            await wait_for(lambda: len(calls) == 2, message="the retry")
            await wait_for(lambda: nothing_pending(redis, stream), message="acked")
        assert worker.jobs_complete == 1
        assert worker.jobs_failed == 0
    finally:
        await _stop_worker(worker, task)
        await pool.aclose()
    assert calls.attempts == [1, 2]
    assert not await redis.exists(stream + ":retries")  # struck off the ledger


async def test_the_ready_worker_rides_out_a_restart_of_its_redis(
    fresh_server: RedisServer,
    stream: str,
    make_client: Callable[..., Redis],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="codex_bot.retry_worker")
    settings = worker_settings({"REDIS_URL": fresh_server.url})
    worker = create_worker(settings, handle_signals=False, poll_delay=0.01)
    task = await _start_worker(worker)
    pool = create_retry_pool(fresh_server.url)
    try:
        fresh_server.stop()
        # arq's own worker ends at the first poll that fails; this one keeps trying
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=1.0)
        fresh_server.start()

        payload = {"type": "x", ATTEMPT_FIELD: 2, ORIGIN_FIELD: "1-0", "chat_id": 7}
        await ArqRetryScheduler(pool).schedule_retry(stream, payload, delay=0)
        redis = make_client(fresh_server.url, decode_responses=True)
        await wait_for(lambda: xlen_is(redis, stream, 1), timeout=15, message="redelivery")
        # the job's own task ends after the count goes up: stopping sooner would cancel it
        await wait_for(
            lambda: worker.jobs_complete == 1 and all(t.done() for t in worker.tasks.values()),
            message="the job to finish",
        )
        assert not task.done()
        said = [r.getMessage() for r in caplog.records if r.name == "codex_bot.retry_worker"]
        assert said[0].startswith("arq's Redis cannot be reached")
        assert any(line.startswith("arq's Redis answers again after") for line in said)
    finally:
        await _stop_worker(worker, task)
        await pool.aclose()


# -- retries arq loses end in the dead-letter stream ---------------------------------------


async def _lost_retry(
    redis: Redis, stream: str, arq: Arq, *, handler_fails: bool = True
) -> dict[str, str]:
    """Fail a handler once, let the retry get lost in arq, return its dead letter."""
    calls = Calls()
    dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=3, retry_delay=0.05)

    @dispatcher.on_message("x")
    async def send(payload: dict[str, Any], container: Any) -> None:
        calls.record(payload)
        if handler_fails:
            raise TelegramNetworkError(method=METHOD, message="timeout")

    dispatcher.setup(container=None)
    async with dispatching(redis, stream, dispatcher, claim_interval=0.05):
        await StreamProducer(redis, stream).add_event("x", {"chat_id": 7, "text": "hi"})
        await wait_for(lambda: _dead_count(redis, stream, 1), timeout=15, message="a dead letter")
    assert len(calls) == 1  # the retry never came back
    [letter] = await _dead(redis, stream)
    assert letter["text"] == "hi"
    assert letter[DEAD_HANDLER_FIELD] == handler_name(send)
    assert letter[ATTEMPT_FIELD] == "json:2"
    assert not await redis.exists(stream + ":retries", stream + ":retries:due")
    assert await nothing_pending(redis, stream)
    return letter


async def _dead_count(redis: Redis, stream: str, count: int) -> bool:
    return await redis.xlen(stream + ":dead") >= count


async def test_a_retry_the_worker_cannot_read_is_dead_lettered(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    async with running_arq(redis_server.url, "pickle", check_after=0.1) as (arq, _):
        letter = await _lost_retry(redis, stream, arq)
    assert "ended without putting the event back" in letter[DEAD_REASON_FIELD]
    assert "job serializer" in letter[DEAD_REASON_FIELD]


async def test_a_retry_arq_gives_up_on_is_dead_lettered(
    redis_server: RedisServer, fresh_server: RedisServer, redis: Redis, stream: str
) -> None:
    unreachable = Redis.from_url(fresh_server.url)
    fresh_server.stop()
    ctx = {"codex_redis": unreachable}  # the streams' Redis is down for the worker: arq gives up
    try:
        async with running_arq(redis_server.url, worker_ctx=ctx, max_tries=1, check_after=0.1) as (
            arq,
            _,
        ):
            letter = await _lost_retry(redis, stream, arq)
    finally:
        await unreachable.aclose()
    assert "ended without putting the event back" in letter[DEAD_REASON_FIELD]


async def test_a_retry_that_expires_unrun_is_dead_lettered(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    async with running_arq(redis_server.url, start_worker=False, check_after=0.1, expires=0.2) as (
        arq,
        _,
    ):
        letter = await _lost_retry(redis, stream, arq)
    assert "arq dropped the retry job" in letter[DEAD_REASON_FIELD]


async def _due_score(redis: Redis, stream: str) -> float | None:
    rows = await redis.zrange(stream + ":retries:due", 0, -1, withscores=True)
    return rows[0][1] if rows else None


async def test_a_retry_still_waiting_for_a_worker_is_not_dead_lettered(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    calls = Calls()
    async with running_arq(redis_server.url, start_worker=False, check_after=0.05) as (arq, start):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=3, retry_delay=0.05)

        @dispatcher.on_message("x")
        async def send(payload: dict[str, Any], container: Any) -> None:
            if calls.record(payload) == 1:
                raise TelegramNetworkError(method=METHOD, message="timeout")

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher, claim_interval=0.05):
            await StreamProducer(redis, stream).add_event("x", {"chat_id": 7})
            await wait_for(lambda: len(calls) == 1, message="the first attempt")
            # sweeps look at the overdue retry while arq still holds it, and wait
            first = await wait_for(lambda: _due_score(redis, stream), message="the retry noted")

            async def looked_at_again() -> bool:
                score = await _due_score(redis, stream)
                return score is not None and score > first

            await wait_for(looked_at_again, message="the reaper to look and wait")
            assert await redis.xlen(stream + ":dead") == 0
            await start()
            await wait_for(lambda: len(calls) == 2, message="the late retry")
            await wait_for(lambda: nothing_pending(redis, stream), message="acked")
    assert await redis.xlen(stream + ":dead") == 0
    assert not await redis.exists(stream + ":retries")


async def test_a_replayed_dead_letter_runs_the_failed_handler_again(
    redis_server: RedisServer, redis: Redis, stream: str
) -> None:
    steady, blocked = Calls(), Calls()
    unblocked = asyncio.Event()
    async with running_arq(redis_server.url) as (arq, _):
        dispatcher = BotRedisDispatcher(arq.scheduler, max_attempts=2, retry_delay=0.05)

        @dispatcher.on_message("x")
        async def notify(payload: dict[str, Any], container: Any) -> None:
            steady.record(payload)

        @dispatcher.on_message("x")
        async def send(payload: dict[str, Any], container: Any) -> None:
            blocked.record(payload)
            if not unblocked.is_set():
                raise TelegramForbiddenError(
                    method=METHOD, message="Forbidden: bot was blocked by the user"
                )

        dispatcher.setup(container=None)
        async with dispatching(redis, stream, dispatcher):
            await StreamProducer(redis, stream).add_event("x", {"chat_id": 7, "text": "hi"})
            await wait_for(lambda: _dead(redis, stream), message="dead letter")
            unblocked.set()  # the user unblocked the bot; the operator replays
            result = await StreamOps(redis, stream).replay()
            assert len(result.replayed) == 1
            await wait_for(lambda: len(blocked) == 2, message="the replay")
            await wait_for(lambda: _settled(redis, stream, arq), message="settled")

    assert steady.attempts == [1]  # only the failed handler ran again
    assert blocked.attempts == [1, 1]  # with a fresh attempt count
    assert blocked.payloads[1] == {"type": "x", "chat_id": 7, "text": "hi"}
    assert await _dead(redis, stream) == []
