"""``RedisRouter``: a feature's handlers, grouped by event type."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from codex_bot.redis.types import FilterFunc, HandlerFunc

HandlerEntry = tuple[HandlerFunc, FilterFunc | None]


def check_handler(handler: Any) -> None:
    """Refuse, at registration, a handler that would fail on every event.

    A handler is an ``async def`` (or an object whose ``__call__`` is one, or a
    ``functools.partial`` of one) called as ``handler(payload, container)``. A plain ``def``
    would even run its side effects before failing, and be retried.

    Raises:
        TypeError: the handler is not async, or cannot take ``(payload, container)``.
    """
    name = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    if not callable(handler):
        msg = f"handler {name!r} is not callable"
        raise TypeError(msg)
    # an object with an async __call__ is awaitable when called, though not a function
    call = handler if inspect.isroutine(handler) else type(handler).__call__
    if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
        msg = (
            f"handler {name!r} must be an 'async def' taking (payload, container); a plain "
            "function would run and then fail on every event"
        )
        raise TypeError(msg)
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):  # a callable Python cannot introspect: trust it
        return
    try:
        signature.bind(None, None)
    except TypeError:
        msg = f"handler {name!r} must take (payload, container), not {signature}"
        raise TypeError(msg) from None


def check_registration(message_type: Any, filter_func: Any, method: str) -> None:
    """Refuse, at registration, an event type or filter that could never work.

    ``@router.message`` written without its event type hands the handler over as the type:
    nothing would be registered, and the events dead-lettered as a type nobody handles. An
    ``async def`` filter would be called without ``await``: its coroutine is always true.

    ``method`` names the decorator as a user writes it, e.g. ``"redis_router.message"``.

    Raises:
        TypeError: the type is not a string, or the filter is not a plain callable.
        ValueError: the type is empty.
    """
    if not isinstance(message_type, str):
        if callable(message_type):
            msg = (
                f'{method}() takes the event type first: write @{method}("order.paid"), '
                f"not @{method}"
            )
        else:
            msg = f"the event type must be a string, not {type(message_type).__name__}"
        raise TypeError(msg)
    if not message_type:
        msg = "the event type must be a non-empty string"
        raise ValueError(msg)
    if filter_func is None:
        return
    name = getattr(filter_func, "__qualname__", None) or type(filter_func).__qualname__
    if not callable(filter_func):
        msg = f"filter_func {name!r} is not callable"
        raise TypeError(msg)
    call = filter_func if inspect.isroutine(filter_func) else type(filter_func).__call__
    if inspect.iscoroutinefunction(filter_func) or inspect.iscoroutinefunction(call):
        msg = (
            f"filter_func {name!r} must be a plain function payload -> bool; an 'async def' "
            "filter is never awaited and always lets the handler run"
        )
        raise TypeError(msg)


class RedisRouter:
    """Handlers of one feature, by event type; ``feature_setting.py`` declares one.

    Example:
        ```python
        redis_router = RedisRouter()

        @redis_router.message("notification.created")
        async def handle_notification(payload: dict, container) -> None:
            await container.bot().send_message(payload["chat_id"], payload["text"])

        @redis_router.message("notification.created", filter_func=lambda p: p.get("urgent"))
        async def handle_urgent(payload: dict, container) -> None: ...
        ```
    """

    def __init__(self) -> None:
        self._handlers: dict[str, list[HandlerEntry]] = {}

    def message(
        self, message_type: str, filter_func: FilterFunc | None = None
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated handler for ``message_type``.

        Args:
            message_type: The event type, e.g. ``"booking.confirmed"``.
            filter_func: Optional ``payload -> bool``; the handler runs only when it is truthy.

        Returns:
            A decorator that returns the handler unchanged.

        Raises:
            TypeError: ``message_type`` is not a string (``@router.message`` without it), or
                ``filter_func`` is an ``async def``; (from the decorator) the handler is not
                an ``async def`` taking ``(payload, container)``.
            ValueError: ``message_type`` is empty.
        """
        check_registration(message_type, filter_func, "redis_router.message")

        def decorator(handler: HandlerFunc) -> HandlerFunc:
            check_handler(handler)
            self._handlers.setdefault(message_type, []).append((handler, filter_func))
            return handler

        return decorator

    @property
    def handlers(self) -> dict[str, list[HandlerEntry]]:
        """Registered handlers: ``{type: [(handler, filter_func), ...]}``."""
        return self._handlers
