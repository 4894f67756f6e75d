"""Mistakes in registering a handler fail when it is registered, not silently later."""

from typing import Any

import pytest

from codex_bot.redis import BotRedisDispatcher, RedisRouter


async def notify(payload: dict[str, Any], container: Any) -> None:
    return None


def test_message_used_without_the_event_type_is_refused() -> None:
    router = RedisRouter()
    # ``@redis_router.message`` without ("type"): the handler would be replaced by the
    # decorator and registered for nothing, and its events dead-lettered as unknown types
    with pytest.raises(TypeError, match=r"message\(\"order.paid\"\)"):
        router.message(notify)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"on_message\(\"order.paid\"\)"):
        BotRedisDispatcher().on_message(notify)  # type: ignore[arg-type]
    assert router.handlers == {}


@pytest.mark.parametrize("event_type", ["", 42, None, b"order.paid"])
def test_an_event_type_that_no_event_can_have_is_refused(event_type: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="event type"):
        RedisRouter().message(event_type)


def test_an_async_filter_is_refused() -> None:
    async def is_urgent(payload: dict[str, Any]) -> bool:
        return bool(payload.get("urgent"))

    # called without await, it would return a coroutine: always true, never awaited
    with pytest.raises(TypeError, match="filter_func 'test_an_async_filter_is_refused"):
        RedisRouter().message("order.paid", filter_func=is_urgent)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not callable"):
        RedisRouter().message("order.paid", filter_func="urgent")  # type: ignore[arg-type]


def test_a_sync_filter_and_a_dotted_type_are_accepted() -> None:
    router = RedisRouter()
    router.message("order.paid", filter_func=lambda payload: True)(notify)
    assert list(router.handlers) == ["order.paid"]
