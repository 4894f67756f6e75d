"""``RedisRouter``: a feature's handlers, grouped by event type."""

from __future__ import annotations

from collections.abc import Callable

from codex_bot.redis.types import FilterFunc, HandlerFunc

HandlerEntry = tuple[HandlerFunc, FilterFunc | None]


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
        """

        def decorator(handler: HandlerFunc) -> HandlerFunc:
            self._handlers.setdefault(message_type, []).append((handler, filter_func))
            return handler

        return decorator

    @property
    def handlers(self) -> dict[str, list[HandlerEntry]]:
        """Registered handlers: ``{type: [(handler, filter_func), ...]}``."""
        return self._handlers
