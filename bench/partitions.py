"""The partitions scenario: what ``partitions=1`` costs a drain, and how long a failover takes.

1. **Partitioned drain.** The drain scenario's backlog (``drain_events`` events over 1,000
   chats) is written twice: to a plain stream and, through ``StreamProducer(partitions=1)``,
   to its one partition ``{part:drain:p0}``. codex_bot (``bench.codex drain``, default
   settings) drains each, without partitions and with ``partitions=1`` (one replica; every
   read and ACK then runs in the lease-checking Lua script). The two contenders run
   ``repeat`` times each, interleaved (A, B, A, B, ...), on fresh groups; the medians give
   ``partitions_baseline_eps`` (this scenario's own runs without partitions, next to the
   partitioned ones for fairness; the drain scenario's ``codex_bot_eps`` is the same
   contender measured at another moment), ``codex_bot_p1_eps`` and
   ``partitions_overhead = 1 - codex_bot_p1_eps / partitions_baseline_eps`` (how much slower
   ``partitions=1`` drains; negative: faster).
2. **Failover.** ``failover_replicas`` replica processes (``bench.codex replica``: a
   processor with ``partitions=failover_partitions`` and ``lease_ttl=failover_lease_ttl``,
   otherwise default settings; each handler records replica, partition, event number and
   ``time.time()`` in a Redis list when it starts) consume a stream this process feeds at
   ``failover_rate`` events/s over 60 chats (``SyncStreamProducer``). Once the leases are
   split evenly and events have flowed for a second, the first replica is SIGKILLed;
   production goes on for ``lease_ttl + 2`` s, then everything sent must be handled.
   ``failover_gap_s``: over the partitions the dead replica held, the longest time from the
   kill to the first handler started by the partition's new owner (which handles the dead
   replica's pending entries first). ``failover_all_handled``: every event sent was handled
   and, once the survivors stopped, nothing is pending. Also recorded: the events handled
   twice (those the dead replica had in flight) and each partition's longest pause between
   two handlings from a second before the kill on: partitions the dead replica did not
   hold pause too, as the survivors re-split the partitions between them and hand some over.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from typing import IO, Any

from bench.codex import HANDLED
from bench.common import EVENT_TYPE
from bench.scenarios import ROOT, Bench, ChildError, say
from bench.sizes import Sizes
from codex_bot.redis import SyncStreamProducer
from codex_bot.redis.leases import lease_key
from codex_bot.redis.partitioning import partition_stream

DRAIN_STREAM = "part:drain"
CONTENDERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("codex_bot", "codex", ()),
    ("codex_bot_p1", "codex", ("--partitions", "1")),
)
STREAM = "part:failover"
GROUP = "bot"
CHATS = 60
FIRST_CHAT = 50_000
BEFORE_KILL = 1.0
"""Seconds of steady traffic between the even split and the kill."""
AFTER_TAKEOVER = 0.5
"""Seconds the producer goes on once the dead replica's partitions are read again."""
_TIMEOUT = 60.0

Record = tuple[str, str, int, float]
"""What a replica handled: (consumer, partition stream, event number, time.time())."""


def run(bench: Bench) -> None:
    """The partitioned drain against none, then the failover; fill ``bench.results``."""
    _drain(bench)
    failover = bench.attempt("failover", _failover, bench)
    bench.results.setdefault("partitions", {})["failover"] = failover


def _drain(bench: Bench) -> None:
    s, r = bench.sizes, bench.results
    say(f"partitions: drain {s.drain_events:,} events with partitions=1 against none")
    bench.fill(DRAIN_STREAM, "drain", s.drain_events)
    bench.fill(DRAIN_STREAM, "drain", s.drain_events, None, "--partitions", "1")
    drained = bench.drain_rounds(CONTENDERS, DRAIN_STREAM)
    runs = {name: drained[f"{name}_runs"] for name, _, _ in CONTENDERS}
    base, p1 = drained["codex_bot"], drained["codex_bot_p1"]
    r["partitions"] = {"baseline": base, "p1": p1, "baseline_runs": runs["codex_bot"]}
    r["partitions"]["p1_runs"] = runs["codex_bot_p1"]
    r["partitions_baseline_eps"] = base["eps"] if base else None
    r["codex_bot_p1_eps"] = p1["eps"] if p1 else None
    if base and p1:
        r["partitions_overhead"] = 1 - p1["eps"] / base["eps"]
        pairs = zip(runs["codex_bot"], runs["codex_bot_p1"], strict=False)
        r["partitions_overhead_per_round"] = [1 - on["eps"] / off["eps"] for off, on in pairs]
        say(f"  partitions=1: {r['partitions_overhead']:+.1%} against no partitions (medians)")


def _failover(bench: Bench) -> dict[str, Any]:
    s, r = bench.sizes, bench.results
    ttl, count = s.failover_lease_ttl, s.failover_partitions
    names = [f"replica-{n}" for n in range(1, s.failover_replicas + 1)]
    say(
        f"partitions: failover, {len(names)} replicas, {count} partitions, lease_ttl {ttl:g} s, "
        f"{s.failover_rate:g} events/s, one replica SIGKILLed"
    )
    with tempfile.TemporaryFile("w+") as err:
        procs = {name: _start(bench.url, name, s, err) for name in names}
        try:
            if [_line(proc) for proc in procs.values()] != ["ready"] * len(names):
                raise ChildError(f"a replica did not start:\n{_tail(err)}")
            handled = _Handled(bench.client)
            victim, owned, killed_at, sent = _kill_under_load(bench, procs, names, handled)
            handled.wait_for(sent)
            stopped = _stop(procs, victim, err)
            handled.poll()  # what the survivors handled while they stopped
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    pending = sum(
        int(bench.client.xpending(partition_stream(STREAM, i), GROUP)["pending"])
        for i in range(count)
    )
    result = analyse(handled.records, victim, owned, killed_at, sent, count)
    result |= {"lease_ttl": ttl, "pending_after": pending, "replicas": stopped}
    result["all_handled"] = result["unhandled"] == 0 and pending == 0
    r["failover_gap_s"] = result["gap_s"]
    r["failover_lease_ttl_s"] = ttl
    r["failover_all_handled"] = result["all_handled"]
    gap = "never" if result["gap_s"] is None else f"{result['gap_s']:.2f} s"
    say(
        f"  gap {gap} (kill to the new owner's first handler, worst of "
        f"{len(owned)} partitions), {sent:,} events sent, {result['unhandled']} unhandled, "
        f"{result['duplicates']} handled twice, {pending} pending after"
    )
    return result


def _kill_under_load(
    bench: Bench, procs: dict[str, subprocess.Popen[str]], names: list[str], handled: _Handled
) -> tuple[str, list[int], float, int]:
    """Wait for the even split, feed the stream, SIGKILL the first replica meanwhile.

    The feed goes on for ``lease_ttl`` after the kill, then until another replica handled
    something from each partition the dead one held, then ``AFTER_TAKEOVER`` more. Returns
    the victim, the partitions it held, when it was killed and how many events were sent.
    """
    s = bench.sizes
    count = s.failover_partitions
    keys = [lease_key(partition_stream(STREAM, i), GROUP) for i in range(count)]
    split = [names[i % len(names)] for i in range(count)]  # the names sort as listed
    deadline = time.perf_counter() + _TIMEOUT
    while (holders := _holders(bench, keys)) != split:
        if time.perf_counter() > deadline:
            raise ChildError(f"the leases never split evenly: {holders}")
        time.sleep(0.05)
    producer = SyncStreamProducer(bench.client, STREAM, partitions=count)
    feed = _Feed(producer, s.failover_rate)
    feed.until(BEFORE_KILL)
    victim = names[0]
    owned = [i for i, holder in enumerate(_holders(bench, keys)) if holder == victim]
    killed_at = time.time()
    procs[victim].send_signal(signal.SIGKILL)
    waiting = {partition_stream(STREAM, i) for i in owned}
    feed.until(BEFORE_KILL + s.failover_lease_ttl)
    deadline = time.perf_counter() + _TIMEOUT
    while waiting and time.perf_counter() < deadline:
        waiting -= {p for c, p, _, at in handled.poll() if c != victim and at >= killed_at}
        feed.until(feed.elapsed() + 0.05)
    feed.until(feed.elapsed() + AFTER_TAKEOVER)
    return victim, owned, killed_at, feed.sent


def _holders(bench: Bench, keys: list[str]) -> list[str | None]:
    """Who holds each lease now."""
    return [value and value.decode() for value in bench.client.mget(keys)]


class _Feed:
    """Feeds ``STREAM`` at ``rate`` events/s on an absolute schedule, a batch every 10 ms.

    Event ``n`` is ``{"chat_id": FIRST_CHAT + n % CHATS, "n": n}``.
    """

    def __init__(self, producer: SyncStreamProducer, rate: float) -> None:
        self.producer, self.rate = producer, rate
        self.sent = 0
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def until(self, elapsed: float) -> None:
        """Send what falls due until ``elapsed`` seconds after the start."""
        while (now := self.elapsed()) < elapsed:
            due = int(now * self.rate)
            if due > self.sent:
                events = range(self.sent, due)
                self.producer.add_events(
                    [(EVENT_TYPE, {"chat_id": FIRST_CHAT + n % CHATS, "n": n}) for n in events]
                )
                self.sent = due
            time.sleep(0.01)


class _Handled:
    """What the replicas recorded in ``<STREAM>:handled``, read as it grows."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.records: list[Record] = []
        self.seen: set[int] = set()

    def poll(self) -> list[Record]:
        """The records added since the last poll."""
        new: list[Record] = []
        for raw in self.client.lrange(STREAM + HANDLED, len(self.records), -1):
            consumer, partition, n, at = raw.decode().split()
            new.append((consumer, partition, int(n), float(at)))
            self.seen.add(int(n))
        self.records += new
        return new

    def wait_for(self, sent: int) -> None:
        """Return once events 0 to ``sent - 1`` were all handled (or after ``_TIMEOUT``)."""
        deadline = time.perf_counter() + _TIMEOUT
        while len(self.seen) < sent and time.perf_counter() < deadline:
            time.sleep(0.05)
            self.poll()


def _stop(
    procs: dict[str, subprocess.Popen[str]], victim: str, err: IO[str]
) -> list[dict[str, Any]]:
    """SIGTERM the survivors (they drain and hand over); their JSON lines."""
    survivors = [proc for name, proc in procs.items() if name != victim]
    for proc in survivors:
        proc.send_signal(signal.SIGTERM)
    try:
        stopped = [json.loads(_line(proc)) for proc in survivors]
        for proc in survivors:
            proc.wait(timeout=30)
    except (json.JSONDecodeError, OSError, subprocess.TimeoutExpired) as exc:
        raise ChildError(f"a replica failed: {exc}\n{_tail(err)}") from exc
    return stopped


def analyse(
    records: list[Record], victim: str, owned: list[int], killed_at: float, sent: int, count: int
) -> dict[str, Any]:
    """The failover gap per partition the victim held, what went unhandled or twice, pauses."""
    times: dict[str, list[float]] = defaultdict(list)
    taken_over: dict[str, list[float]] = defaultdict(list)
    for consumer, partition, _, at in records:
        times[partition].append(at)
        if consumer != victim and at >= killed_at:
            taken_over[partition].append(at)
    gaps: dict[str, float | None] = {}
    for index in owned:
        later = taken_over[partition_stream(STREAM, index)]
        gaps[str(index)] = min(later) - killed_at if later else None
    pauses = {}
    for index in range(count):
        around = sorted(t for t in times[partition_stream(STREAM, index)] if t >= killed_at - 1)
        pauses[str(index)] = max((b - a for a, b in itertools.pairwise(around)), default=None)
    handled = {n for _, _, n, _ in records}
    known = [gap for gap in gaps.values() if gap is not None]
    return {
        "events": sent,
        "gap_s": max(known) if len(known) == len(gaps) and known else None,
        "gaps_s": gaps,
        "victim": victim,
        "victim_partitions": owned,
        "unhandled": sent - len(handled & set(range(sent))),
        "duplicates": len(records) - len(handled),
        "longest_pause_s": pauses,
    }


def _start(url: str, name: str, s: Sizes, err: IO[str]) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "bench.codex", "replica", "--url", url, "--stream", STREAM]
    cmd += ["--group", GROUP, "--consumer", name, "--partitions", str(s.failover_partitions)]
    cmd += ["--lease-ttl", str(s.failover_lease_ttl)]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT
    )


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


def _tail(err: IO[str]) -> str:
    """The end of what the replicas wrote to stderr."""
    with contextlib.suppress(OSError):
        err.seek(0)
        return err.read()[-3000:]
    return ""
