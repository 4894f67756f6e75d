"""The dispatcher's retry policy and the ARQ scheduler's jobs, one step at a time.

Policy tests feed a retry's payload back into the dispatcher by hand, through a scheduler
that keeps what it was given; scheduler tests use a real arq pool on a real redis-server.
The whole trip through an arq worker and the processor is in ``test_retry_e2e.py``.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from arq import Retry, create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from codex_bot.config import ConfigurationError
from codex_bot.redis import (
    ArqRetryScheduler,
    BotRedisDispatcher,
    EventContext,
    HandlerFailedError,
    RedisStreamStorage,
    RetryDecision,
    RetrySchedulingError,
    classify_failure,
    create_retry_pool,
    json_job_deserializer,
    json_job_serializer,
    redeliver_event,
)
from codex_bot.redis.codec import decode_fields
from codex_bot.redis.constants import ATTEMPT_FIELD, HANDLERS_FIELD, ORIGIN_FIELD
from codex_bot.redis.context import _current
from codex_bot.redis.dispatcher import handler_name
from codex_bot.redis.retry import PickleRefusedError
from codex_bot.testing.redis_server import RedisServer

STREAM = "bot_events"


class KeepingScheduler:
    """A ``RetrySchedulerProtocol`` that keeps what it is given, or refuses it."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.scheduled: list[tuple[str, dict[str, Any], float]] = []

    async def schedule_retry(
        self, stream_name: str, payload: dict[str, Any], delay: float = 60
    ) -> None:
        if self.refuse:
            raise ConnectionError("arq's Redis is down")
        self.scheduled.append((stream_name, payload, delay))


def _in_entry(entry_id: str) -> Any:
    """Run the next dispatch as if the processor read ``entry_id``."""
    return _current.set(EventContext(STREAM, entry_id))


# -- the dispatcher's policy ------------------------------------------------------------


def _failing(raised: dict[str, BaseException], **options: Any) -> BotRedisDispatcher:
    """A dispatcher whose handler for each event type raises what ``raised`` maps it to."""
    dispatcher = BotRedisDispatcher(KeepingScheduler(), **options)
    for kind, error in raised.items():

        async def fail(
            payload: dict[str, Any], container: Any, error: BaseException = error
        ) -> None:
            raise error

        dispatcher.on_message(kind)(fail)
    dispatcher.setup(container=None)
    return dispatcher


def _failure_line(caplog: pytest.LogCaptureFixture) -> tuple[int, bool]:
    """The level of the one "failed on" line logged, and whether it carries a traceback."""
    [line] = [r for r in caplog.records if "failed on" in r.getMessage()]
    return line.levelno, line.exc_info is not None


async def test_telegram_outcomes_log_one_line_and_bugs_their_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiogram.exceptions import TelegramBadRequest, TelegramForbiddenError, TelegramRetryAfter
    from aiogram.methods import SendMessage

    method = SendMessage(chat_id=1, text="hi")
    raised = {
        "flood": TelegramRetryAfter(method=method, message="Too Many Requests", retry_after=3),
        "blocked": TelegramForbiddenError(method=method, message="Forbidden: bot was blocked"),
        "missing": TelegramBadRequest(method=method, message="Bad Request: chat not found"),
        "bug": KeyError("chat_id"),
    }
    dispatcher = _failing(raised)
    caplog.set_level(logging.INFO, logger="codex_bot.redis.dispatcher")
    for kind in raised:
        caplog.clear()
        await dispatcher.process_message({"type": kind})
        level, traced = _failure_line(caplog)
        expected = {
            "flood": (logging.WARNING, False),
            "blocked": (logging.INFO, False),
            "missing": (logging.INFO, False),
            "bug": (logging.WARNING, True),
        }[kind]
        assert (level, traced) == expected, kind


async def test_giving_up_on_a_telegram_failure_is_a_warning_and_on_a_bug_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from aiogram.exceptions import TelegramServerError
    from aiogram.methods import SendMessage

    method = SendMessage(chat_id=1, text="hi")
    raised = {
        "bad_gateway": TelegramServerError(method=method, message="Bad Gateway"),
        "bug": KeyError("chat_id"),
    }
    dispatcher = _failing(raised, max_attempts=1)
    caplog.set_level(logging.INFO, logger="codex_bot.redis.dispatcher")
    for kind, expected in {
        "bad_gateway": (logging.WARNING, False),  # never sent: not an info line
        "bug": (logging.ERROR, True),
    }.items():
        caplog.clear()
        report = await dispatcher.process_message({"type": kind})
        [letter] = report.dead_letters
        assert letter.reason == "gave up after 1 attempts (max_attempts=1)"
        assert _failure_line(caplog) == expected, kind


async def test_backoff_grows_per_attempt_is_capped_and_ends_in_a_dead_letter() -> None:
    scheduler = KeepingScheduler()
    dispatcher = BotRedisDispatcher(scheduler, max_attempts=4, retry_delay=1.0, max_retry_delay=3.0)
    seen: list[dict[str, Any]] = []

    @dispatcher.on_message("order.paid")
    async def always_fails(payload: dict[str, Any], container: Any) -> None:
        seen.append(payload)
        raise RuntimeError("backend down")

    dispatcher.setup(container=None)
    token = _in_entry("5-0")
    try:
        report = await dispatcher.process_message({"type": "order.paid", "chat_id": 7}, STREAM)
    finally:
        _current.reset(token)
    delays = [report.retry_delay]
    for _ in range(2):
        _, payload, _ = scheduler.scheduled[-1]
        report = await dispatcher.process_message(payload, STREAM)
        delays.append(report.retry_delay)
    _, payload, _ = scheduler.scheduled[-1]
    last = await dispatcher.process_message(payload, STREAM)

    # retry n waits retry_delay * 2**(n-1), capped at 3 s; jitter adds at most 10%
    for delay, least in zip(delays, [1.0, 2.0, 3.0], strict=True):
        assert delay is not None
        assert least <= delay <= least * 1.1 + 1e-9
    assert [s[2] for s in scheduler.scheduled] == delays
    assert [s[1][ATTEMPT_FIELD] for s in scheduler.scheduled] == [2, 3, 4]
    assert {s[1][ORIGIN_FIELD] for s in scheduler.scheduled} == {"5-0"}
    name = handler_name(always_fails)
    assert all(s[1][HANDLERS_FIELD] == [name] for s in scheduler.scheduled)
    # max_attempts=4: one delivery and three retries, then the dead letter
    assert len(seen) == 4
    assert seen == [{"type": "order.paid", "chat_id": 7}] * 4  # no codex. metadata
    assert last.retry_delay is None
    assert len(last.dead_letters) == 1
    letter = last.dead_letters[0]
    assert letter.handler == name
    assert letter.attempts == 4
    assert letter.error == "RuntimeError: backend down"
    assert letter.reason == "gave up after 4 attempts (max_attempts=4)"


async def test_max_attempts_one_means_no_retry() -> None:
    scheduler = KeepingScheduler()
    dispatcher = BotRedisDispatcher(scheduler, max_attempts=1, retry_delay=0.1)

    @dispatcher.on_message("x")
    async def fails(payload: dict[str, Any], container: Any) -> None:
        raise RuntimeError("no")

    dispatcher.setup(container=None)
    report = await dispatcher.process_message({"type": "x"}, STREAM)
    assert scheduler.scheduled == []
    assert [letter.attempts for letter in report.dead_letters] == [1]


async def test_a_retry_runs_only_the_handlers_that_failed() -> None:
    scheduler = KeepingScheduler()
    dispatcher = BotRedisDispatcher(scheduler, retry_delay=0.1)
    calls: list[str] = []
    failing = {"second", "third"}

    async def first(payload: dict[str, Any], container: Any) -> None:
        calls.append("first")

    async def second(payload: dict[str, Any], container: Any) -> None:
        calls.append("second")
        if "second" in failing:
            raise RuntimeError("second down")

    async def third(payload: dict[str, Any], container: Any) -> None:
        calls.append("third")
        failing.discard("second")  # the next attempt of second succeeds
        raise RuntimeError("third down")

    for handler in (first, second, third):
        dispatcher.on_message("x")(handler)
    dispatcher.setup(container=None)

    report = await dispatcher.process_message({"type": "x"}, STREAM)
    assert calls == ["first", "second", "third"]
    assert report.handled == (handler_name(first),)
    assert report.retried_handlers == (handler_name(second), handler_name(third))

    calls.clear()
    report = await dispatcher.process_message(scheduler.scheduled[-1][1], STREAM)
    assert calls == ["second", "third"]
    assert report.retried_handlers == (handler_name(third),)

    calls.clear()
    await dispatcher.process_message(scheduler.scheduled[-1][1], STREAM)
    assert calls == ["third"]


async def test_a_handler_registered_twice_is_retried_alone() -> None:
    scheduler = KeepingScheduler()
    dispatcher = BotRedisDispatcher(scheduler, retry_delay=0.1)
    calls: list[int] = []

    def make(n: int) -> Any:
        async def handler(payload: dict[str, Any], container: Any) -> None:
            calls.append(n)
            if n == 2 and calls.count(2) == 1:
                raise RuntimeError("first try of the second one")

        return handler

    dispatcher.on_message("x")(make(1))
    dispatcher.on_message("x")(make(2))
    dispatcher.setup(container=None)
    report = await dispatcher.process_message({"type": "x"}, STREAM)
    assert report.retried_handlers[0].endswith("make.<locals>.handler#2")
    await dispatcher.process_message(scheduler.scheduled[-1][1], STREAM)
    assert calls == [1, 2, 2]


async def test_a_retry_for_a_handler_that_is_gone_is_dead_lettered() -> None:
    dispatcher = BotRedisDispatcher(KeepingScheduler())
    dispatcher.setup(container=None)
    event = {"type": "x", ATTEMPT_FIELD: 2, HANDLERS_FIELD: ["old.module.handler"]}
    report = await dispatcher.process_message(event, STREAM)
    assert not report.unknown
    assert [(d.handler, d.attempts) for d in report.dead_letters] == [("old.module.handler", 2)]
    assert "no longer registered" in report.dead_letters[0].reason


async def test_a_handler_changing_its_payload_does_not_change_the_retry() -> None:
    scheduler = KeepingScheduler()
    dispatcher = BotRedisDispatcher(scheduler, retry_delay=0.1)

    @dispatcher.on_message("x")
    async def greedy(payload: dict[str, Any], container: Any) -> None:
        payload.pop("chat_id")
        raise RuntimeError("no")

    dispatcher.setup(container=None)
    await dispatcher.process_message({"type": "x", "chat_id": 1}, STREAM)
    assert scheduler.scheduled[0][1]["chat_id"] == 1


async def test_a_custom_classifier_decides() -> None:
    scheduler = KeepingScheduler()

    def classifier(exc: BaseException) -> RetryDecision:
        if isinstance(exc, ValueError):
            return RetryDecision(False, reason="the payload is wrong")
        if isinstance(exc, KeyError):
            raise TypeError("a broken classifier")
        return RetryDecision(True, delay=0.25)

    dispatcher = BotRedisDispatcher(scheduler, retry_delay=30.0, classifier=classifier)
    errors: list[Exception] = [ValueError("bad amount"), KeyError("x"), LookupError("later")]
    handlers = []
    for error in errors:

        async def handler(
            payload: dict[str, Any], container: Any, error: Exception = error
        ) -> None:
            raise error

        handlers.append(functools.partial(handler))
        dispatcher.on_message("x")(handlers[-1])
    dispatcher.setup(container=None)

    report = await dispatcher.process_message({"type": "x"}, STREAM)
    assert [(d.reason, d.error) for d in report.dead_letters] == [
        ("the payload is wrong", "ValueError: bad amount")
    ]
    # the classifier's 0.25 s and the backoff's 30 s (for the broken classifier's error)
    assert report.retry_delay is not None
    assert 30.0 <= report.retry_delay <= 33.0
    assert len(report.retried_handlers) == 2


async def test_without_a_scheduler_a_failure_raises_and_a_redelivery_skips_what_succeeded() -> None:
    dispatcher = BotRedisDispatcher()
    calls: list[str] = []
    broken = [True]

    @dispatcher.on_message("x")
    async def fine(payload: dict[str, Any], container: Any) -> None:
        calls.append("fine")

    @dispatcher.on_message("x")
    async def flaky(payload: dict[str, Any], container: Any) -> None:
        calls.append("flaky")
        if broken[0]:
            raise RuntimeError("down")

    dispatcher.setup(container=None)
    for _ in range(2):
        token = _in_entry("9-0")
        try:
            with pytest.raises(HandlerFailedError, match="RuntimeError: down"):
                await dispatcher.process_message({"type": "x"}, STREAM)
        finally:
            _current.reset(token)
    broken[0] = False
    token = _in_entry("9-0")
    try:
        report = await dispatcher.process_message({"type": "x"}, STREAM)
    finally:
        _current.reset(token)
    assert calls == ["fine", "flaky", "flaky", "flaky"]
    assert report.handled == (handler_name(flaky),)
    # settled: the memory is gone, a new delivery of that id runs everything
    token = _in_entry("9-0")
    try:
        await dispatcher.process_message({"type": "x"}, STREAM)
    finally:
        _current.reset(token)
    assert calls[-2:] == ["fine", "flaky"]


async def test_a_redelivery_after_an_unwritten_dead_letter_runs_only_the_dead_handler() -> None:
    # the processor could not write the dead letter, so the same entry comes back
    class PermanentError(Exception):
        pass

    def classifier(exc: BaseException) -> RetryDecision:
        if isinstance(exc, PermanentError):
            return RetryDecision(retry=False, reason="permanent")
        return classify_failure(exc)

    scheduler = KeepingScheduler()
    dispatcher = BotRedisDispatcher(scheduler, retry_delay=0.1, classifier=classifier)
    calls: list[str] = []

    @dispatcher.on_message("x")
    async def fine(payload: dict[str, Any], container: Any) -> None:
        calls.append("fine")

    @dispatcher.on_message("x")
    async def hopeless(payload: dict[str, Any], container: Any) -> None:
        calls.append("hopeless")
        raise PermanentError("never")

    @dispatcher.on_message("x")
    async def flaky(payload: dict[str, Any], container: Any) -> None:
        calls.append("flaky")
        raise RuntimeError("later")

    dispatcher.setup(container=None)
    for _ in range(2):
        token = _in_entry("7-0")
        try:
            report = await dispatcher.process_message({"type": "x"}, STREAM)
        finally:
            _current.reset(token)
        assert [letter.handler for letter in report.dead_letters] == [handler_name(hopeless)]
    assert calls == ["fine", "hopeless", "flaky", "hopeless"]
    assert len(scheduler.scheduled) == 1  # the retry of flaky was handed over once


async def test_a_scheduler_that_fails_raises_retry_scheduling_error() -> None:
    dispatcher = BotRedisDispatcher(KeepingScheduler(refuse=True), retry_delay=0.1)

    @dispatcher.on_message("x")
    async def fails(payload: dict[str, Any], container: Any) -> None:
        raise RuntimeError("no")

    dispatcher.setup(container=None)
    with pytest.raises(RetrySchedulingError, match="arq's Redis is down"):
        await dispatcher.process_message({"type": "x"}, STREAM)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BotRedisDispatcher(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        BotRedisDispatcher(retry_delay=-1)


def test_handler_names_are_stable() -> None:
    async def handler(payload: dict[str, Any], container: Any) -> None: ...

    class Callable_:
        async def __call__(self, payload: dict[str, Any], container: Any) -> None: ...

    plain = handler_name(handler)
    assert plain == f"{__name__}.test_handler_names_are_stable.<locals>.handler"
    assert handler_name(functools.partial(functools.partial(handler))) == plain
    assert handler_name(Callable_()).endswith("<locals>.Callable_")


# -- ArqRetryScheduler and redeliver_event on a real Redis ------------------------------


@pytest.fixture
async def retry_pool(redis_server: RedisServer, redis: Redis) -> AsyncIterator[ArqRedis]:
    """The bot's arq pool (JSON jobs) on the flushed test server, on a queue of its own."""
    pool = create_retry_pool(redis_server.url, queue_name=f"arq:test:{uuid.uuid4().hex[:8]}")
    yield pool
    await pool.aclose()


async def test_a_pool_that_would_pickle_is_refused(redis_server: RedisServer) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_server.url))  # arq's default: pickle
    try:
        with pytest.raises(PickleRefusedError, match="create_retry_pool"):
            ArqRetryScheduler(pool)
    finally:
        await pool.aclose()


async def test_the_retry_pool_connects_on_first_use(fresh_server: RedisServer) -> None:
    fresh_server.stop()
    pool = create_retry_pool(fresh_server.url)  # no ping: the bot starts while Redis is down
    try:
        scheduler = ArqRetryScheduler(pool)
        with pytest.raises(RedisConnectionError):
            await scheduler.schedule_retry(STREAM, _retry_payload(2), delay=1)
        fresh_server.start()
        await scheduler.schedule_retry(STREAM, _retry_payload(2), delay=1)
        assert await pool.zcard(pool.default_queue_name) == 1
    finally:
        await pool.aclose()


def test_json_job_serializers_round_trip() -> None:
    job = {"t": 1, "f": "redeliver_event", "a": ["s", {"type": "x"}], "k": {"recorded": True}}
    assert json_job_deserializer(json_job_serializer(job)) == job


def _retry_payload(attempt: int) -> dict[str, Any]:
    return {
        "type": "order.paid",
        "chat_id": 42,
        "items": [{"sku": "A"}],
        "note": "json:not json",
        ATTEMPT_FIELD: attempt,
        HANDLERS_FIELD: ["app.notify"],
        ORIGIN_FIELD: "1700000000000-0",
    }


async def test_schedule_retry_enqueues_one_deferred_job(retry_pool: ArqRedis) -> None:
    scheduler = ArqRetryScheduler(retry_pool)
    before = time.time() * 1000
    await scheduler.schedule_retry(STREAM, _retry_payload(2), delay=30.0001)
    job_id = scheduler.job_id(STREAM, _retry_payload(2))
    assert job_id == "codex:retry:bot_events:1700000000000-0:2"
    queue = retry_pool.default_queue_name
    score = await retry_pool.zscore(queue, job_id)
    assert score is not None
    # never early: the defer is rounded up, with a millisecond for arq's rounded clock
    assert score >= before + 30_001
    assert score <= time.time() * 1000 + 30_003
    info = await Job(job_id, retry_pool, queue, retry_pool.job_deserializer).info()
    assert info is not None
    assert info.function == "redeliver_event"
    stream_name, fields = info.args
    assert stream_name == STREAM
    assert decode_fields(fields) == _retry_payload(2)


async def test_scheduling_the_same_retry_twice_is_a_no_op(retry_pool: ArqRedis) -> None:
    scheduler = ArqRetryScheduler(retry_pool)
    queue = retry_pool.default_queue_name
    await scheduler.schedule_retry(STREAM, _retry_payload(2), delay=30)
    await scheduler.schedule_retry(STREAM, _retry_payload(2), delay=30)
    assert await retry_pool.zcard(queue) == 1
    await scheduler.schedule_retry(STREAM, _retry_payload(3), delay=30)
    assert await retry_pool.zcard(queue) == 2


async def test_the_same_entry_failing_twice_schedules_one_job(retry_pool: ArqRedis) -> None:
    dispatcher = BotRedisDispatcher(ArqRetryScheduler(retry_pool), retry_delay=30)

    @dispatcher.on_message("x")
    async def fails(payload: dict[str, Any], container: Any) -> None:
        raise RuntimeError("no")

    dispatcher.setup(container=None)
    for _ in range(2):  # a crash before the ACK hands the same entry over again
        token = _in_entry("77-0")
        try:
            await dispatcher.process_message({"type": "x"}, STREAM)
        finally:
            _current.reset(token)
    assert await retry_pool.zrange(retry_pool.default_queue_name, 0, -1) == [
        b"codex:retry:bot_events:77-0:2"
    ]


async def test_a_replayed_dead_letter_gets_a_retry_of_its_own(retry_pool: ArqRedis) -> None:
    """A copy of an event (a replay keeping its ``codex.`` fields) is a new entry and a new job."""
    dispatcher = BotRedisDispatcher(ArqRetryScheduler(retry_pool), retry_delay=30)

    @dispatcher.on_message("x")
    async def fails(payload: dict[str, Any], container: Any) -> None:
        raise RuntimeError("no")

    dispatcher.setup(container=None)
    copied = {"type": "x", ORIGIN_FIELD: "5-0", ATTEMPT_FIELD: 2}
    for entry_id in ("40-0", "41-0"):
        token = _in_entry(entry_id)
        try:
            report = await dispatcher.process_message(copied, STREAM)
        finally:
            _current.reset(token)
        assert report.retry_delay is not None
    assert sorted(await retry_pool.zrange(retry_pool.default_queue_name, 0, -1)) == [
        b"codex:retry:bot_events:40-0:3",
        b"codex:retry:bot_events:41-0:3",
    ]


async def test_redeliver_event_appends_the_fields(retry_pool: ArqRedis, redis: Redis) -> None:
    fields = {"type": "x", "chat_id": "json:42", ATTEMPT_FIELD: "json:2"}
    entry_id = await redeliver_event({"redis": retry_pool}, "events:a", fields)
    assert await redis.xrange("events:a") == [(entry_id, fields)]
    # a client put into ctx by on_startup wins over arq's own
    entry_id = await redeliver_event({"redis": None, "codex_redis": redis}, "events:b", fields)
    assert await redis.xrange("events:b") == [(entry_id, fields)]


async def test_a_job_arq_runs_twice_delivers_once(retry_pool: ArqRedis, redis: Redis) -> None:
    scheduler = ArqRetryScheduler(retry_pool)
    retry = await scheduler.schedule_retry(STREAM, _retry_payload(2), delay=30)
    await RedisStreamStorage(redis).record_retry(STREAM, retry)  # as the processor does
    assert await redis.hexists(STREAM + ":retries", retry.job_id)
    ctx = {"redis": retry_pool, "job_id": retry.job_id}
    first = await redeliver_event(ctx, STREAM, retry.fields)
    again = await redeliver_event(ctx, STREAM, retry.fields)
    assert first
    assert again == ""
    assert [entry_id for entry_id, _ in await redis.xrange(STREAM)] == [first]
    assert not await redis.exists(STREAM + ":retries", STREAM + ":retries:due")
    # a job that already delivered is not written down again
    await RedisStreamStorage(redis).record_retry(STREAM, retry)
    assert not await redis.exists(STREAM + ":retries")


async def test_redeliver_event_asks_arq_to_retry_while_redis_is_down(
    fresh_server: RedisServer,
) -> None:
    client = Redis.from_url(fresh_server.url)
    fresh_server.stop()
    try:
        with pytest.raises(Retry) as caught:
            await redeliver_event({"redis": client, "job_try": 3}, "events", {"type": "x"})
        assert caught.value.defer_score == 4000
    finally:
        await client.aclose()


async def test_redeliver_event_asks_arq_to_retry_when_redis_refuses_the_write(
    redis: Redis,
) -> None:
    await redis.set("events", "not a stream")  # WRONGTYPE, as a read-only replica would refuse
    with pytest.raises(Retry):
        await redeliver_event({"redis": redis, "job_try": 1}, "events", {"type": "x"})


@pytest.mark.parametrize(
    ("url", "problem"),
    [("redis://127.0.0.1:6379/abc", "database number"), ("localhost:6379", "no scheme")],
)
def test_a_retry_pool_refuses_a_url_redis_py_would_misread(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem) as raised:
        create_retry_pool(url)
    assert isinstance(raised.value, ValueError)  # what redis-py raised for a bad scheme


def test_retry_job_ids_leave_no_room_for_clashes() -> None:
    scheduler = ArqRetryScheduler(create_retry_pool("redis://127.0.0.1:1"))
    ids = {
        scheduler.job_id(stream, {ORIGIN_FIELD: origin, ATTEMPT_FIELD: attempt})
        for stream in ("a", "b")
        for origin in ("1-0", "2-0")
        for attempt in (2, 3)
    }
    assert len(ids) == 8
    no_origin: Callable[[], str] = functools.partial(scheduler.job_id, "a", {"type": "x"})
    assert no_origin() != no_origin()
