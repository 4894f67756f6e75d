"""``BotRedisDispatcher`` basics: routing, filters, failures, setup, unknown and bad events.

Retries are tested in ``tests/test_retry*.py``.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from codex_bot.redis import (
    BotRedisDispatcher,
    DispatcherNotReadyError,
    DispatchReport,
    HandlerFailedError,
    MalformedEventError,
    RedisRouter,
    StreamProducer,
)
from tests.conftest import pending_count, wait_for

CONTAINER = object()


def ready(*routers: RedisRouter) -> BotRedisDispatcher:
    dispatcher = BotRedisDispatcher()
    for router in routers:
        dispatcher.include_router(router)
    dispatcher.setup(container=CONTAINER)
    return dispatcher


async def test_routes_by_type_to_handlers_with_the_container():
    calls: list[tuple[str, dict[str, Any], Any]] = []
    router = RedisRouter()

    @router.message("booking.confirmed")
    async def on_booking(payload: dict[str, Any], container: Any) -> None:
        calls.append(("booking", payload, container))

    @router.message("order.paid")
    async def on_order(payload: dict[str, Any], container: Any) -> None:
        calls.append(("order", payload, container))

    dispatcher = ready(router)

    @dispatcher.on_message("order.paid")
    async def also_on_order(payload: dict[str, Any], container: Any) -> None:
        calls.append(("also", payload, container))

    assert router.handlers == {
        "booking.confirmed": [(on_booking, None)],
        "order.paid": [(on_order, None)],
    }
    report = await dispatcher.process_message({"type": "order.paid", "chat_id": 1})
    assert isinstance(report, DispatchReport)
    assert calls == [
        ("order", {"type": "order.paid", "chat_id": 1}, CONTAINER),
        ("also", {"type": "order.paid", "chat_id": 1}, CONTAINER),
    ]
    assert len(report.handled) == 2
    assert report.failed == ()
    assert dispatcher.handles("booking.confirmed")
    assert not dispatcher.handles("nothing")


async def test_filters_choose_which_handlers_run():
    ran: list[str] = []
    router = RedisRouter()

    @router.message("booking.confirmed", filter_func=lambda p: p.get("urgent"))
    async def urgent(payload: dict[str, Any], container: Any) -> None:
        ran.append("urgent")

    @router.message("booking.confirmed")
    async def always(payload: dict[str, Any], container: Any) -> None:
        ran.append("always")

    dispatcher = ready(router)
    await dispatcher.process_message({"type": "booking.confirmed", "urgent": False})
    assert ran == ["always"]
    ran.clear()
    await dispatcher.process_message({"type": "booking.confirmed", "urgent": True})
    assert ran == ["urgent", "always"]


async def test_every_handler_runs_when_one_fails_and_the_failures_are_named():
    ran: list[str] = []
    dispatcher = ready()

    @dispatcher.on_message("t")
    async def first(payload: dict[str, Any], container: Any) -> None:
        ran.append("first")

    @dispatcher.on_message("t")
    async def broken(payload: dict[str, Any], container: Any) -> None:
        ran.append("broken")
        raise ValueError("no luck")

    @dispatcher.on_message("t", filter_func=lambda p: 1 / 0)
    async def bad_filter(payload: dict[str, Any], container: Any) -> None:
        ran.append("bad_filter")

    @dispatcher.on_message("t")
    async def last(payload: dict[str, Any], container: Any) -> None:
        ran.append("last")

    with pytest.raises(HandlerFailedError) as caught:
        await dispatcher.process_message({"type": "t"})
    assert ran == ["first", "broken", "last"]
    failed = {failure.handler.rsplit(".", 1)[-1]: failure for failure in caught.value.failures}
    assert set(failed) == {"broken", "bad_filter"}
    assert failed["broken"].description == "ValueError: no luck"
    assert isinstance(failed["bad_filter"].error, ZeroDivisionError)
    assert caught.value.event_type == "t"


async def test_processing_before_setup_raises():
    dispatcher = BotRedisDispatcher()
    ran: list[str] = []

    @dispatcher.on_message("t")
    async def handler(payload: dict[str, Any], container: Any) -> None:
        ran.append("ran")

    with pytest.raises(DispatcherNotReadyError, match=r"setup\(container\)"):
        await dispatcher.process_message({"type": "t"})
    assert ran == []


async def test_unknown_types_are_counted_and_reported_as_dead_letters():
    dispatcher = ready()
    report = await dispatcher.process_message({"type": "nobody.listens"})
    await dispatcher.process_message({"type": "nobody.listens"})
    await dispatcher.process_message({"type": "other"})
    assert report.unknown
    [letter] = report.dead_letters
    assert (letter.handler, letter.reason) == ("", "no handler for type 'nobody.listens'")
    assert dispatcher.unknown_types == {"nobody.listens": 2, "other": 1}


async def test_unknown_types_ack_reports_no_dead_letter():
    dispatcher = BotRedisDispatcher(unknown_types="ack")
    dispatcher.setup(container=None)
    report = await dispatcher.process_message({"type": "nobody.listens"})
    assert report.unknown
    assert report.dead_letters == ()


def test_unknown_types_takes_dead_or_ack():
    with pytest.raises(ValueError, match="'dead' or 'ack'"):
        BotRedisDispatcher(unknown_types="drop")  # type: ignore[arg-type]


@pytest.mark.parametrize("event", [{}, {"chat_id": 1}, {"type": ""}, {"type": 42}])
async def test_an_event_without_a_type_is_malformed(event):
    with pytest.raises(MalformedEventError, match="no 'type'"):
        await ready().process_message(event)


async def test_handlers_do_not_see_codex_metadata():
    seen: list[dict[str, Any]] = []
    dispatcher = ready()

    @dispatcher.on_message("t")
    async def handler(payload: dict[str, Any], container: Any) -> None:
        seen.append(payload)

    await dispatcher.process_message({"type": "t", "n": 1, "codex.attempt": 1})
    assert seen == [{"type": "t", "n": 1}]


async def test_a_failing_handler_through_the_processor_leaves_the_entry_pending(
    redis, stream, make_processor
):
    ran: list[str] = []
    dispatcher = ready()

    @dispatcher.on_message("t")
    async def broken(payload: dict[str, Any], container: Any) -> None:
        ran.append("broken")
        raise RuntimeError("boom")

    @dispatcher.on_message("t")
    async def fine(payload: dict[str, Any], container: Any) -> None:
        ran.append("fine")

    processor = make_processor(redis, stream, dispatcher.process_message)
    await processor.start_listening()
    await StreamProducer(redis, stream).add_event("t", {"chat_id": 1})
    await wait_for(lambda: processor.stats.failed == 1, message="the failure")
    assert ran == ["broken", "fine"]
    assert await pending_count(redis, stream) == 1


def test_a_handler_that_would_fail_on_every_event_is_refused_when_registered():
    router = RedisRouter()
    dispatcher = BotRedisDispatcher()
    side_effects: list[str] = []

    def plain(payload: dict[str, Any], container: Any) -> None:
        side_effects.append("sent")

    async def one_argument(payload: dict[str, Any]) -> None: ...

    for register in (router.message("t"), dispatcher.on_message("t")):
        with pytest.raises(TypeError, match="must be an 'async def'"):
            register(plain)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"must take \(payload, container\)"):
            register(one_argument)  # type: ignore[arg-type]
    assert side_effects == []
    assert not router.handlers
    assert not dispatcher.handles("t")


def test_async_callables_partials_and_extra_defaults_are_accepted():
    class Sender:
        async def __call__(self, payload: dict[str, Any], container: Any) -> None: ...

    async def with_default(payload: dict[str, Any], container: Any, retries: int = 3) -> None: ...

    async def three(prefix: str, payload: dict[str, Any], container: Any) -> None: ...

    router = RedisRouter()
    for handler in (Sender(), with_default, functools.partial(three, "x")):
        router.message("t")(handler)
    assert len(router.handlers["t"]) == 3
