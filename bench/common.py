"""What every contender shares: the events, the client, the child-process protocol, RSS."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from redis.asyncio import Redis

EVENT_TYPE = "order.shipped"
DRAIN_CHATS = 1000
"""Chats the drain events are spread over (the default ordering key sees 1000 lanes)."""


def drain_events(
    count: int, chats: int = DRAIN_CHATS, random_state: int = 5
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A notification bot's backlog: small payloads for ``chats`` chats in random order."""
    rng = random.Random(random_state)
    for n in range(count):
        order_id = 100_000 + n
        yield (
            EVENT_TYPE,
            {
                "chat_id": 10_000 + rng.randrange(chats),
                "order_id": order_id,
                "text": f"Your order #{order_id} has shipped",
            },
        )


def ordered_events(
    count: int, chats: int, *, shuffled: bool, random_state: int = 7
) -> Iterator[tuple[str, dict[str, Any]]]:
    """``count // chats`` events per chat, each with its per-chat ``seq`` number.

    Round-robin (chat 0, 1, ..., chats-1, chat 0, ...) unless ``shuffled``: then the chats
    interleave at random, still each chat's events in ``seq`` order.
    """
    per_chat = count // chats
    order = [c for _ in range(per_chat) for c in range(chats)]
    if shuffled:
        random.Random(random_state).shuffle(order)
    seqs = [0] * chats
    for chat in order:
        seq = seqs[chat]
        seqs[chat] += 1
        yield EVENT_TYPE, {"chat_id": 20_000 + chat, "seq": seq, "text": "Reminder: slot at 10:00"}


BROADCAST_FIRST_CHAT = 40_000
BROADCAST_BUSY_CHAT = 39_999
BROADCAST_FIRST_GROUP = -40_001


def broadcast_events(
    private: int, groups: int, per_group: int, busy: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    """A broadcast: one message to each of ``private`` chats, ``per_group`` to each group
    (negative ids) and ``busy`` to one chat, the latter two spread evenly among the first.

    Each event has the chat's ``seq`` number (0, 1, ... in stream order) and a short text.
    """
    group_ids = [BROADCAST_FIRST_GROUP - g for g in range(groups)]
    special = [((i + 0.5) / busy, BROADCAST_BUSY_CHAT) for i in range(busy)]
    special += [
        ((j + 0.5) / (groups * per_group), group_ids[j % groups]) for j in range(groups * per_group)
    ]
    total = private + len(special)
    step = total / max(len(special), 1)
    spread = {int((k + 0.5) * step): chat for k, (_, chat) in enumerate(sorted(special))}
    seqs: dict[int, int] = {}
    bulk = iter(range(BROADCAST_FIRST_CHAT, BROADCAST_FIRST_CHAT + private))
    for n in range(total):
        chat = spread[n] if n in spread else next(bulk)
        seq = seqs[chat] = seqs.get(chat, -1) + 1
        yield EVENT_TYPE, {"chat_id": chat, "seq": seq, "text": "Flash sale: 20% off today"}


def connect(url: str, *, decode: bool = False, hiredis: bool = True) -> Redis:
    """An asyncio client; ``hiredis=False`` forces redis-py's pure-Python reply parser."""
    kwargs: dict[str, Any] = {"decode_responses": decode}
    if not hiredis:
        from redis._parsers import _AsyncRESP2Parser

        kwargs["parser_class"] = _AsyncRESP2Parser
    return Redis.from_url(url, **kwargs)


def hiredis_version() -> str | None:
    """The installed hiredis version, or None when redis-py parses replies in Python."""
    try:
        import hiredis
    except ImportError:
        return None
    return str(getattr(hiredis, "__version__", "present"))


def child_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every ``python -m bench.<contender>`` child takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("mode", help="which measurement to run")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", default="bench")
    parser.add_argument("--events", type=int, default=0, help="events to wait for")
    parser.add_argument("--rate", type=float, default=500.0, help="latency: events/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="latency: producer run")
    parser.add_argument("--no-hiredis", action="store_true")
    parser.add_argument(
        "--metrics", action="store_true", help="codex: instrument() it and scrape once a second"
    )
    parser.add_argument("--start-id", default="0", help="drain: where a pre-made group starts")
    parser.add_argument(
        "--partitions", type=int, help="codex: read the stream's partitions (partitions=N)"
    )
    parser.add_argument("--lease-ttl", type=float, default=10.0, help="codex: partition leases")
    parser.add_argument("--consumer", default="codex", help="replicas: the consumer name")
    return parser


def run_child(
    main: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]], description: str
) -> None:
    """Parse the child arguments, run ``main`` and print its result as one JSON line."""
    args = child_parser(description).parse_args()
    result = asyncio.run(main(args))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


async def wait_until(
    condition: Callable[[], Any], timeout: float, interval: float = 0.001, what: str = "condition"
) -> None:
    """Poll a cheap sync ``condition`` until it holds (a benchmark may poll; tests may not)."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            raise TimeoutError(msg)
        await asyncio.sleep(interval)


async def wait_done(done: asyncio.Event, progress: Callable[[], int], stall: float = 30.0) -> None:
    """Wait for ``done``; give up when ``progress()`` has not moved for ``stall`` seconds.

    A contender that stops making progress (a bug, a lost connection) fails the run in
    ``stall`` seconds instead of hanging it.
    """
    last, moved_at = progress(), time.perf_counter()
    while True:
        try:
            await asyncio.wait_for(done.wait(), 1.0)
        except TimeoutError:
            now = progress()
            if now != last:
                last, moved_at = now, time.perf_counter()
            elif time.perf_counter() - moved_at > stall:
                msg = f"no progress for {stall:.0f}s at {now:,} events"
                raise TimeoutError(msg) from None
        else:
            return


async def group_state(redis: Redis, stream: str, group: str) -> dict[str, Any]:
    """The group's pending count, entries-read and last-delivered id (XINFO GROUPS)."""
    for info in await redis.xinfo_groups(stream):
        if _text(info["name"]) == group:
            return {
                "pending": int(info["pending"]),
                "entries_read": info.get("entries-read"),
                "last_delivered_id": _text(info["last-delivered-id"]),
            }
    return {"pending": None, "entries_read": None, "last_delivered_id": None}


async def wait_group_acked(redis: Redis, stream: str, group: str, timeout: float) -> None:
    """Poll XINFO GROUPS until nothing the group read is pending."""
    deadline = time.perf_counter() + timeout
    while (await group_state(redis, stream, group))["pending"]:
        if time.perf_counter() > deadline:
            msg = f"timed out after {timeout:.0f}s waiting for the ACKs of {group}"
            raise TimeoutError(msg)
        await asyncio.sleep(0.002)


async def last_entry_id(redis: Redis, stream: str) -> str | None:
    """The id of the stream's newest entry."""
    newest = await redis.xrevrange(stream, count=1)
    return _text(newest[0][0]) if newest else None


def drain_result(
    events: int, seconds: float, cpu_seconds: float, state: dict[str, Any], last_id: str | None
) -> dict[str, Any]:
    """One drain's JSON: events/s, CPU per event and whether the group ended fully ACKed."""
    return {
        "events": events,
        "seconds": seconds,
        "eps": events / seconds if seconds > 0 else None,
        "cpu_us_per_event": cpu_seconds / events * 1e6 if events else None,
        "wall_us_per_event": seconds / events * 1e6 if events else None,
        "group": state,
        "all_acked": state["pending"] == 0 and state["last_delivered_id"] == last_id,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(math.ceil(q / 100 * len(sorted_values)), 1)
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_result(latencies_s: list[float], expected: int) -> dict[str, Any]:
    """p50/p99/max in ms of handler start minus send time."""
    ms = sorted(x * 1000 for x in latencies_s)
    return {
        "events": len(ms),
        "expected": expected,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": ms[-1] if ms else None,
    }


def sent_time(value: Any) -> float:
    """The producer's ``perf_counter()`` from a payload value (decoded or ``json:`` text)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        value = value.removeprefix("json:")
    return float(value)


# -- resident memory ----------------------------------------------------------------------


def _rss_reader() -> Callable[[], int]:
    try:
        import psutil
    except ImportError:
        page = os.sysconf("SC_PAGE_SIZE")

        def from_proc() -> int:
            with open("/proc/self/statm", "rb") as statm:
                return int(statm.read().split()[1]) * page

        return from_proc
    process = psutil.Process()
    return lambda: int(process.memory_info().rss)


rss_bytes = _rss_reader()
"""This process's resident set size (psutil; ``/proc/self/statm`` without it)."""


class RssSampler:
    """Samples RSS every ``interval`` seconds in a thread and keeps the peak."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())
            self.samples += 1


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
