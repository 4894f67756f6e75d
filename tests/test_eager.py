"""``start_eagerly``: a Task only when the coroutine has to wait, with Task semantics."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from codex_bot.redis.eager import start_eagerly

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")


async def test_a_coroutine_that_never_waits_needs_no_task():
    ran = []

    async def quick() -> None:
        var.set("inside")
        ran.append(True)

    assert start_eagerly(quick(), asyncio.get_running_loop()) is None
    assert ran == [True]
    assert var.get() == "outside"  # it ran in a copy of the context


async def test_a_waiting_coroutine_carries_on_in_a_task_with_its_context():
    gate = asyncio.get_running_loop().create_future()
    seen = []

    async def slow() -> None:
        var.set("inside")
        seen.append(await gate)
        await asyncio.sleep(0)
        seen.append(var.get())

    task = start_eagerly(slow(), asyncio.get_running_loop())
    assert task is not None
    assert seen == []
    gate.set_result("value")
    await task
    assert seen == ["value", "inside"]
    assert var.get() == "outside"


async def test_an_awaited_failure_reaches_the_coroutine():
    gate = asyncio.get_running_loop().create_future()
    caught = []

    async def guarded() -> None:
        try:
            await gate
        except KeyError as exc:
            caught.append(exc)

    task = start_eagerly(guarded(), asyncio.get_running_loop())
    gate.set_exception(KeyError("boom"))
    await task
    assert len(caught) == 1


async def test_cancelling_the_task_cancels_inside_the_coroutine():
    cleaned = []

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    task = start_eagerly(stuck(), asyncio.get_running_loop())
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_an_error_after_waiting_fails_the_task():
    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("late")

    task = start_eagerly(broken(), asyncio.get_running_loop())
    assert task is not None
    with pytest.raises(ValueError, match="late"):
        await task
