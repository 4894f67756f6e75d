"""The broadcast scenario: two bot replicas pace one broadcast by Telegram's limits.

A broadcast (one message to each of many private chats, some to groups, many to one chat)
goes onto a stream of ``PARTITIONS`` partition streams, each event to its chat's partition.
Two replicas (``bench.replica``, a process each, one consumer group, one Redis, one bot
token, default settings but ``partitions=...``) divide the partitions between them through
leases, so each chat is read by one replica at a time. They start on the empty partitions
and each reports ready once it holds its share of the leases; only then is the broadcast
written (``SyncStreamProducer(partitions=...)`` from this process, in about 0.1 s; the
replicas start on its first events as they land), so no lease moves while it goes out, and
the clock starts as the writing does. They send it through ``RateLimitMiddleware`` to the
Bot API stand-in, which runs in a thread of this process, answers after 50 ms and enforces
the same limits as the middleware (``bench.replica.LIMITS``, ten times Telegram's). Figures:

- ``tg_rate_ratio``: messages the stand-in answered per second, from the first answer to the
  last one to a private chat of the bulk, over ``per_second``;
- ``tg_floods``: 429s it answered; ``tg_dead``: dead letters (of every partition);
- ``tg_order_ok``: every chat's messages arrived at the stand-in in stream order, whichever
  replica sent them, each once, and all of them (``replica_order_ok`` checks each
  replica's own messages alone, the weaker check of replicas without partitions);
- ``tg_limiter_p99_ms``: what the middleware adds to a request that does not wait (p99),
  measured by the first replica once the broadcast is over, on the same Redis.

``broadcast.replicas`` says which partitions each replica held and how many events it
handled; ``chats_on_both`` counts the chats both replicas sent to (0 with partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import IO, Any

from bench.common import BROADCAST_FIRST_CHAT, broadcast_events
from bench.replica import LIMITS
from bench.scenarios import ROOT, Bench, ChildError, say
from codex_bot.redis import SyncStreamProducer, partition_stream
from codex_bot.testing import RejectedCall, SentMessage, TelegramBotAPIStandIn

LATENCY = 0.05
REPLICAS = 2
PARTITIONS = 8
STREAM = "tg:broadcast"
_TIMEOUT = 120.0
_CHUNK = 1000


class StandInThread:
    """The Bot API stand-in on an event loop of its own, in a thread of this process."""

    def __init__(self) -> None:
        self.api = TelegramBotAPIStandIn(latency=LATENCY, limits=LIMITS)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bot-api", daemon=True)

    def __enter__(self) -> StandInThread:
        self._thread.start()
        self._call(self.api.start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self.api.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def delivered(self) -> int:
        """Messages delivered so far (a 429 the middleware absorbed is sent again)."""
        return self._call(self._count())

    def records(self) -> tuple[list[SentMessage], list[RejectedCall], int]:
        """What it delivered, what it rejected and how many 429s it answered."""
        return self._call(self._records())

    def _call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    async def _count(self) -> int:
        return len(self.api.sent)

    async def _records(self) -> tuple[list[SentMessage], list[RejectedCall], int]:
        return self.api.sent, self.api.rejected, self.api.flood_answers


def run(bench: Bench) -> None:
    """Run the two replicas, fill the stream, measure the middleware; fill ``bench.results``."""
    s, r = bench.sizes, bench.results
    total = s.tg_private + s.tg_groups * s.tg_per_group + s.tg_busy
    say(
        f"broadcast: {s.tg_private:,} private chats + {s.tg_groups * s.tg_per_group} messages "
        f"over {s.tg_groups} groups + {s.tg_busy} to one chat, {REPLICAS} replicas on "
        f"{PARTITIONS} partitions, {LIMITS.per_second:g}/s, {LATENCY * 1000:.0f} ms Bot API"
    )

    def fill() -> None:
        producer = SyncStreamProducer(bench.client, STREAM, partitions=PARTITIONS)
        events = broadcast_events(s.tg_private, s.tg_groups, s.tg_per_group, s.tg_busy)
        while chunk := list(itertools.islice(events, _CHUNK)):
            producer.add_events(chunk)

    with StandInThread() as stand_in:
        replicas, seconds = _run_replicas(bench.url, stand_in, total, s.tg_limiter_calls, fill)
        sent, rejected, floods = stand_in.records()
    dead_letters = [partition_stream(STREAM, i) + ":dead" for i in range(PARTITIONS)]
    dead = sum(int(bench.client.xlen(stream)) for stream in dead_letters)
    run = analyse(sent, rejected, replicas, s.tg_private, total)
    for replica in replicas:  # the seqs per chat served the order checks; too long to keep
        del replica["sent"]
    run |= {"floods": floods, "dead": dead, "seconds": seconds, "replicas": replicas}
    say(
        f"  {run['delivered']:,}/{total:,} delivered in {seconds:.1f} s, {run['rate']:.1f} msg/s "
        f"({run['rate_ratio']:.1%} of {LIMITS.per_second:g}), 429s {floods}, dead {dead}, "
        f"every chat in order: {run['order_ok']}, each replica's: {run['replica_order_ok']}"
    )
    for replica in replicas:
        say(
            f"  {replica['consumer']}: partitions {replica['partitions']}, "
            f"{replica['handled']:,} handled"
        )
    limiter = replicas[0]["limiter"]
    if limiter:
        p50, p99 = limiter["p50_ms"], limiter["p99_ms"]
        say(f"  flood control per request that does not wait: p50 {p50:.3f}, p99 {p99:.3f} ms")
    r["broadcast"] = {**run, "limiter": limiter}
    r["tg_rate_ratio"] = run["rate_ratio"]
    r["tg_floods"] = floods
    r["tg_dead"] = dead
    r["tg_order_ok"] = run["order_ok"]
    r["tg_limiter_p99_ms"] = limiter["p99_ms"] if limiter else None


def _run_replicas(
    url: str, stand_in: StandInThread, total: int, limiter_calls: int, fill: Callable[[], None]
) -> tuple[list[dict[str, Any]], float]:
    """Start the replicas, fill the stream once they hold their leases, stop them once
    everything was answered."""
    with contextlib.ExitStack() as files:
        errors = [files.enter_context(tempfile.TemporaryFile("w+")) for _ in range(REPLICAS)]
        api = stand_in.api.base_url
        procs = [
            _start_replica(url, api, n, err, limiter_calls if n == 1 else 0)
            for n, err in enumerate(errors, 1)
        ]
        try:
            if (ready := [_line(proc) for proc in procs]) != ["ready"] * REPLICAS:
                raise ChildError(f"a replica did not take its partitions: {ready}\n{_tail(errors)}")
            started = time.perf_counter()
            fill()
            while stand_in.delivered() < total and time.perf_counter() - started < _TIMEOUT:
                if any(proc.poll() is not None for proc in procs):
                    break
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            _tell(procs)  # stop
            first, *others = procs
            results = [json.loads(_line(proc)) for proc in others]
            for proc in others:
                proc.wait(timeout=30)
            _tell([first])  # time the flood control, alone on the machine
            results.insert(0, json.loads(_line(first)))
            first.wait(timeout=30)
        except (json.JSONDecodeError, OSError, subprocess.TimeoutExpired) as exc:
            raise ChildError(f"a replica failed: {exc}\n{_tail(errors)}") from exc
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    return results, seconds


def analyse(
    sent: list[SentMessage],
    rejected: list[RejectedCall],
    replicas: list[dict[str, Any]],
    private: int,
    total: int,
) -> dict[str, Any]:
    """Delivery, rate while the bulk went out, and order per chat from the stand-in's log."""
    bulk = range(BROADCAST_FIRST_CHAT, BROADCAST_FIRST_CHAT + private)
    answers = sorted([m.at for m in sent] + [call.at for call in rejected])
    bulk_end = max((m.at for m in sent if m.chat_id in bulk), default=0.0)
    counted = [at for at in answers if at <= bulk_end]
    span = bulk_end - counted[0] if counted else 0.0
    rate = (len(counted) - 1) / span if span > 0 else 0.0
    arrived: dict[Any, list[int]] = defaultdict(list)
    for message in sent:  # in arrival order
        arrived[message.chat_id].append(int(message.text.split(" ", 1)[0]))
    delivered = {(chat, seq) for chat, seqs in arrived.items() for seq in seqs}
    # a chat's seqs are 0, 1, ... in stream order: they must arrive as exactly that
    in_order = all(seqs == list(range(len(seqs))) for seqs in arrived.values())
    chats = [set(replica["sent"]) for replica in replicas]
    return {
        "events": total,
        "delivered": len(delivered),
        "duplicates": len(sent) - len(delivered),
        "rate": rate,
        "rate_ratio": rate / LIMITS.per_second,
        "bulk_seconds": span,
        "order_ok": len(delivered) == total and in_order,
        "replica_order_ok": all(_in_order(replica, arrived) for replica in replicas),
        "chats_on_both": len(set.intersection(*chats)),
        "partitions": PARTITIONS,
        "handled": [replica["handled"] for replica in replicas],
    }


def _in_order(replica: dict[str, Any], arrived: dict[Any, list[int]]) -> bool:
    """The replica's messages to each chat reached Telegram in stream order."""
    for chat, seqs in replica["sent"].items():
        mine = set(seqs)
        at_telegram = [seq for seq in arrived.get(int(chat), []) if seq in mine]
        if at_telegram != sorted(mine):
            return False
    return True


def _share(n: int) -> str:
    """The partitions replica ``n`` holds once both run: the live replicas, sorted by consumer
    name, take partition ``i`` at position ``i mod replicas`` (the library's rule)."""
    return ",".join(str(i) for i in range(PARTITIONS) if i % REPLICAS == n - 1)


def _start_replica(
    url: str, api: str, n: int, err: IO[str], limiter_calls: int
) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.replica", "broadcast", "--url", url, "--stream", STREAM]
    cmd += ["--group", "replicas", "--consumer", f"replica-{n}", "--api", api]
    cmd += ["--events", str(limiter_calls), "--partitions", str(PARTITIONS), "--share", _share(n)]
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT
    )


def _tell(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.flush()


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def _tail(errors: list[IO[str]]) -> str:
    """The end of each replica's stderr."""
    tails = []
    for err in errors:
        err.seek(0)
        tails.append(err.read()[-1500:])
    return "\n".join(tails)
