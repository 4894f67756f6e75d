"""``KeyedWorkers``: per-key order, a bounded pool, and what close leaves behind."""

from __future__ import annotations

import asyncio

from codex_bot.redis.workers import KeyedWorkers
from tests.conftest import wait_for


async def test_items_of_a_key_run_in_order_and_keys_in_parallel():
    gates = {key: asyncio.Event() for key in "ab"}
    done: list[tuple[str, int]] = []

    async def handle(item: tuple[str, int]) -> None:
        await gates[item[0]].wait()
        done.append(item)

    workers: KeyedWorkers[tuple[str, int]] = KeyedWorkers(handle, max_workers=10)
    for n in range(3):
        for key in "ab":
            workers.submit((key, n), key)
    workers.kick()
    gates["b"].set()  # b's items all run while a's first one is still waiting
    await wait_for(lambda: done == [("b", 0), ("b", 1), ("b", 2)], message="b's three")
    gates["a"].set()
    await wait_for(lambda: len(done) == 6, message="a's three")
    assert [n for key, n in done if key == "a"] == [0, 1, 2]
    assert await workers.close(1) == 0


async def test_no_more_than_max_workers_run_at_once():
    release = asyncio.Event()
    running = 0
    peak = 0
    finished: list[int] = []

    async def handle(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        finished.append(item)

    workers: KeyedWorkers[int] = KeyedWorkers(handle, max_workers=3)
    for n in range(10):
        workers.submit(n, None)
    workers.kick()
    await wait_for(lambda: running == 3, message="three running")
    release.set()
    await wait_for(lambda: len(finished) == 10, message="all ten done")
    assert peak == 3
    assert await workers.close(1) == 0


async def test_close_cancels_late_items_and_hands_back_the_unstarted():
    started: list[int] = []

    async def handle(item: int) -> None:
        started.append(item)
        await asyncio.Event().wait()  # never finishes

    workers: KeyedWorkers[int] = KeyedWorkers(handle, max_workers=2)
    for n in range(5):
        workers.submit(n, "same-chat" if n < 3 else None)
    workers.kick()
    await wait_for(lambda: len(started) == 2, message="two started")
    assert await workers.close(0.01) == 2
    assert sorted(workers.queued()) == sorted(set(range(5)) - set(started))


async def test_withdrawn_items_never_run_and_the_rest_keep_their_order():
    started, release = asyncio.Event(), asyncio.Event()
    done: list[tuple[str, int]] = []

    async def handle(item: tuple[str, int]) -> None:
        if item == ("a", 0):
            started.set()
            await release.wait()
        done.append(item)

    # one worker: ("a", 0) runs and blocks; behind it a's lane, then b's and c's items
    workers: KeyedWorkers[tuple[str, int]] = KeyedWorkers(handle, max_workers=1)
    for n in range(3):
        for key in "abc":
            workers.submit((key, n), key)
    workers.kick()
    await wait_for(started.is_set, message="the worker to run a's first item")

    # b's head (ready) goes with its lane; c's second item leaves from the middle of its lane
    taken = workers.withdraw(lambda item: item[0] == "b" or item == ("c", 1))
    release.set()
    await wait_for(lambda: len(done) == 5, message="the items left")

    assert sorted(taken) == [("b", 0), ("b", 1), ("b", 2), ("c", 1)]
    assert [item for item in done if item[0] == "a"] == [("a", 0), ("a", 1), ("a", 2)]
    assert [item for item in done if item[0] == "c"] == [("c", 0), ("c", 2)]
    assert await workers.close(1) == 0


async def test_withdrawing_the_head_of_a_key_moves_the_next_one_up():
    done: list[tuple[str, int]] = []

    async def handle(item: tuple[str, int]) -> None:
        done.append(item)

    workers: KeyedWorkers[tuple[str, int]] = KeyedWorkers(handle, max_workers=2)
    for n in range(3):
        workers.submit(("a", n), "a")  # not kicked: ("a", 0) is ready, 1 and 2 wait behind

    assert workers.withdraw(lambda item: item == ("a", 0)) == [("a", 0)]
    workers.kick()
    await wait_for(lambda: len(done) == 2, message="a's last two")
    assert done == [("a", 1), ("a", 2)]
    assert await workers.close(1) == 0
