"""Start a coroutine eagerly: run it up to its first suspension before making a Task.

Python 3.12 has ``asyncio.eager_task_factory``; 3.11 does not. A handler that finishes
without waiting on I/O (a filtered-out event, an unknown type, a no-op) then costs no Task
and no trip through the event loop; one that waits gets a Task that carries on from where
it stopped, in the same copied context, with cancellation delivered into it as a Task would.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator
from typing import Any


def start_eagerly(
    coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop
) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first waits; return None if it finished, else its Task.

    The coroutine runs in a copy of the current context, like a Task's first step. An
    exception it raises before waiting propagates to the caller.
    """
    context = contextvars.copy_context()
    try:
        awaited = context.run(coro.send, None)
    except StopIteration:
        return None
    return loop.create_task(_carry_on(coro, awaited), context=context)


class _Suspend:
    """Hands what the inner coroutine yielded (a Future or None) up to the running Task."""

    __slots__ = ("awaited",)

    def __init__(self, awaited: Any) -> None:
        self.awaited = awaited

    def __await__(self) -> Generator[Any, None, None]:
        yield self.awaited


async def _carry_on(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    while True:
        try:
            await _Suspend(awaited)
        except BaseException as exc:  # noqa: BLE001 - a Task delivers cancellation into the coroutine
            try:
                awaited = coro.throw(exc)
            except StopIteration:
                return
            continue
        try:
            awaited = coro.send(None)
        except StopIteration:
            return
