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
            TypeError: (from the decorator) the handler is not an ``async def`` taking
                ``(payload, container)``.
        """

        def decorator(handler: HandlerFunc) -> HandlerFunc:
            check_handler(handler)
            self._handlers.setdefault(message_type, []).append((handler, filter_func))
            return handler

        return decorator

    @property
    def handlers(self) -> dict[str, list[HandlerEntry]]:
        """Registered handlers: ``{type: [(handler, filter_func), ...]}``."""
        return self._handlers
