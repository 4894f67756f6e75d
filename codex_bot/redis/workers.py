"""``KeyedWorkers``: up to N workers; items with the same key run one after another, in order.

A worker runs items back to back until one has to wait; only then does the next loop turn
find items left and wake another worker. Items that finish without waiting cost no Task
and no wake-up each; items that wait on I/O (a Telegram call) fan out up to ``max_workers``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class KeyedWorkers(Generic[T]):
    """Runs ``handle(item)`` for submitted items on a pool of worker Tasks.

    Args:
        handle: Called once per item; it must not raise (a raise ends its worker).
        max_workers: Items running at once.
    """

    def __init__(self, handle: Callable[[T], Awaitable[None]], max_workers: int) -> None:
        self._handle = handle
        self._max_workers = max_workers
        self._open = True
        self._ready: deque[tuple[T, Hashable | None]] = deque()
        self._lanes: dict[Hashable, deque[T] | None] = {}
        self._idle: list[asyncio.Future[None]] = []
        self._workers: set[asyncio.Task[None]] = set()
        self._balancing = False

    def submit(self, item: T, key: Hashable | None) -> None:
        """Queue ``item``; with a key, behind the items of that key already submitted."""
        if key is not None:
            lanes = self._lanes
            if key in lanes:  # an item with this key is in flight: wait behind it
                lane = lanes[key]
                if lane is None:
                    lane = lanes[key] = deque()
                lane.append(item)
                return
            lanes[key] = None  # in flight, nothing waiting yet: no deque for most items
        self._ready.append((item, key))

    def kick(self) -> None:
        """Make sure a worker takes what was submitted (call once after a batch)."""
        if not self._balancing:
            self._balance()

    async def close(self, grace: float) -> int:
        """Start nothing new, wait up to ``grace`` seconds for running items, cancel the rest.

        Returns:
            How many items were still running and got cancelled.
        """
        self._open = False
        for waiter in self._idle:
            waiter.cancel()
        self._idle.clear()
        if not self._workers:
            return 0
        _, late = await asyncio.wait(set(self._workers), timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        return len(late)

    def withdraw(self, chosen: Callable[[T], bool]) -> list[T]:
        """Take back the items not started yet that ``chosen`` selects; the rest keep their order.

        Returns:
            The items taken back. An item that waited behind a withdrawn one of its key moves
            up in its place.
        """
        taken: list[T] = []
        for key, lane in self._lanes.items():
            if lane:
                kept: deque[T] = deque()
                for item in lane:
                    (taken if chosen(item) else kept).append(item)
                self._lanes[key] = kept or None
        ready: list[tuple[T, Hashable | None]] = []
        for item, key in self._ready:
            if not chosen(item):
                ready.append((item, key))
                continue
            taken.append(item)
            if key is not None:
                lane = self._lanes[key]
                if lane:
                    ready.append((lane.popleft(), key))
                    if not lane:
                        self._lanes[key] = None
                else:
                    del self._lanes[key]
        self._ready.clear()  # in place: the workers hold this deque
        self._ready.extend(ready)
        return taken

    def queued(self) -> list[T]:
        """Take the items submitted but not started (after ``close``)."""
        items = [item for item, _ in self._ready]
        items += [item for lane in self._lanes.values() for item in lane or ()]
        self._ready.clear()
        self._lanes.clear()
        return items

    def _balance(self) -> None:
        self._balancing = False
        if not self._ready or not self._open:
            return
        while self._idle:
            waiter = self._idle.pop()
            if not waiter.done():
                waiter.set_result(None)
                break
        else:
            if len(self._workers) >= self._max_workers:
                return
            task = asyncio.get_running_loop().create_task(self._work())
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        # one more worker per loop turn, while items are still waiting after it
        self._balancing = True
        asyncio.get_running_loop().call_soon(self._balance)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        ready = self._ready
        while self._open:
            if not ready:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            item, key = ready.popleft()
            while True:
                await self._handle(item)
                if key is None:
                    break
                lane = self._lanes[key]
                if not lane or not self._open:
                    if not lane:
                        del self._lanes[key]
                    break
                item = lane.popleft()  # the same worker keeps the key's order
