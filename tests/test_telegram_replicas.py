"""Two bot replicas (two OS processes, one Redis, one bot token) share one flood budget."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codex_bot.telegram import TelegramLimits
from codex_bot.testing import TelegramBotAPIStandIn
from tests._helpers import max_in_window

REPLICA = Path(__file__).with_name("_broadcast_proc.py")
PER_SECOND = 100
LIMITS = {"per_second": PER_SECOND}
PER_REPLICA = 75
STALL_FLOODS = 3
"""429s a scheduling stall of a loaded test machine may cause (2% of the sends)."""


@pytest.fixture(scope="module")
def replicas() -> Iterator[list[subprocess.Popen[str]]]:
    """Two replica processes, started once: loading aiogram takes each of them seconds."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(REPLICA)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPLICA.parent.parent,
        )
        for _ in range(2)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.communicate()  # waits, and closes the pipes


async def broadcast_from_each(
    replicas: list[subprocess.Popen[str]], redis_url: str, api: str, prefixes: list[str]
) -> list[Any]:
    """Let every replica broadcast to chats of its own at once, each with its key prefix."""
    for n, (proc, prefix) in enumerate(zip(replicas, prefixes, strict=True)):
        order = {"redis": redis_url, "api": api, "token": "4242:TEST", "prefix": prefix}
        order |= {"first": 1 + n * PER_REPLICA, "count": PER_REPLICA, "limits": LIMITS}
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(order) + "\n")
        proc.stdin.flush()
    return [
        json.loads(await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30))  # type: ignore[union-attr]
        for proc in replicas
    ]


async def test_two_replicas_share_one_budget(
    replicas: list[subprocess.Popen[str]], redis: Any, redis_server: Any
) -> None:
    async with TelegramBotAPIStandIn(limits=TelegramLimits(**LIMITS)) as api:
        reports = await broadcast_from_each(
            replicas, redis_server.url, api.base_url, ["codex:tg"] * 2
        )
        arrivals = sorted(message.at for message in api.sent)

    assert [report["failed"] for report in reports] == [0, 0]
    # none when the processes run on time; a stall on a loaded machine can bunch a send or
    # two, and the 429 is absorbed (a budget per process draws dozens: the test below)
    assert api.flood_answers <= STALL_FLOODS
    assert len(arrivals) == 2 * PER_REPLICA
    assert max_in_window(arrivals, 1.0) <= PER_SECOND
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert rate <= PER_SECOND  # how close it comes is `make bench`'s tg_rate_ratio
    assert all(report["stats"]["waited"] > PER_REPLICA / 3 for report in reports)


async def test_a_limiter_per_process_would_flood_telegram(
    replicas: list[subprocess.Popen[str]], redis: Any, redis_server: Any
) -> None:
    """The same run with a budget per process: proves the test above can fail."""
    async with TelegramBotAPIStandIn(limits=TelegramLimits(**LIMITS)) as api:
        reports = await broadcast_from_each(replicas, redis_server.url, api.base_url, ["a", "b"])

    assert api.flood_answers >= 20  # far beyond what a stall explains
    assert sum(report["stats"]["flood_absorbed"] for report in reports) == api.flood_answers
    assert len(api.sent) == 2 * PER_REPLICA  # absorbed: delivered all the same, only later
