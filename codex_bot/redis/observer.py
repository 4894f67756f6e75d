"""``DispatchObserver``: what a ``BotRedisDispatcher`` tells the code that watches it (metrics).

A dispatcher without observers pays one truthiness check per event. Handlers are timed only
for observers that ask for it, by wrapping them once when their type is first dispatched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from codex_bot.redis.types import FilterFunc, HandlerFunc

if TYPE_CHECKING:
    from codex_bot.redis.reports import DispatchReport

HandlerTimer = Callable[[float], None]
"""Takes the seconds one handler call took (whether it returned or raised)."""
NamedHandler = tuple[str, HandlerFunc, FilterFunc | None]
"""A handler with its retry name and its filter, as the dispatcher keeps them."""


class DispatchObserver(Protocol):
    """Watches a dispatcher's events; add one with ``BotRedisDispatcher.add_observer``.

    Both methods run on the event loop for every event (or handler call): keep them to a
    few dictionary operations, never I/O, and never raise.
    """

    def dispatched(self, report: DispatchReport, stream_name: str) -> None:
        """One event went through the dispatcher; ``report`` says what became of it.

        When the retry could not be scheduled (or there is no retry scheduler), ``report``
        is the one from before that step: its ``failed`` handlers are neither retried nor
        dead-lettered, and the entry stays pending.
        """

    def handler_timer(self, event_type: str, handler: str) -> HandlerTimer | None:
        """What takes each call's duration of ``handler`` on ``event_type``; None: untimed."""


def timed_handlers(
    event_type: str, named: Sequence[NamedHandler], observers: Sequence[DispatchObserver]
) -> list[NamedHandler]:
    """``named`` with each handler wrapped to time its calls for the observers that ask.

    The name and the filter stay as they are, so retries target the same handlers.
    """
    timed: list[NamedHandler] = []
    for name, handler, filter_func in named:
        timers = [t for t in (o.handler_timer(event_type, name) for o in observers) if t]
        timed.append((name, _timed(handler, timers) if timers else handler, filter_func))
    return timed


def _timed(handler: HandlerFunc, timers: list[HandlerTimer]) -> HandlerFunc:
    if len(timers) == 1:
        [timer] = timers

        async def timed_once(payload: dict[str, Any], container: Any) -> None:
            started = perf_counter()
            try:
                await handler(payload, container)
            finally:
                timer(perf_counter() - started)

        return timed_once

    async def timed_all(payload: dict[str, Any], container: Any) -> None:
        started = perf_counter()
        try:
            await handler(payload, container)
        finally:
            seconds = perf_counter() - started
            for each in timers:
                each(seconds)

    return timed_all
