"""Stopping the processor's background tasks."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` (if any) and wait for it to end."""
    if task is None:
        return
    # asyncio.wait_for before 3.12 (redis-py wraps commands in it when socket_timeout is
    # set) can swallow a cancellation that lands as the command completes: repeat it
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
