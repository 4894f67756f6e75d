"""The benchmark's scenarios, each contender in a subprocess of its own (``Bench``).

``Bench`` owns one redis-server URL: it pre-fills streams from ``bench.fill``, runs
``python -m bench.<contender> <mode>`` children on fresh consumer groups, collects their JSON
lines into ``results`` and prints progress as it goes.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.faststream_sub import unavailable as faststream_unavailable
from bench.sizes import REQUIRED_KEYS, Sizes

ROOT = Path(__file__).resolve().parent.parent
DRAIN_CONTENDERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("raw", "raw_redis", ()),
    ("codex_bot", "codex", ()),
    ("codex_bot_metrics", "codex", ("--metrics",)),
)
"""Drain contenders run ``repeat`` times each, interleaved: name, module, extra arguments."""


class ChildError(RuntimeError):
    """A contender's subprocess failed or printed no JSON."""


class Bench:
    """One benchmark run against one redis-server."""

    def __init__(self, url: str, sizes: Sizes, *, faststream: bool) -> None:
        self.url = url
        self.sizes = sizes
        self.faststream = faststream
        self.results: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS)
        self.results["errors"] = []
        self.results["notes"] = []
        self.client = redis.Redis.from_url(url)
        self._redis_pid = int(self.client.info("server")["process_id"])
        self._groups = 0

    def close(self) -> None:
        self.client.close()

    # -- plumbing ----------------------------------------------------------------------

    def child(
        self,
        module: str,
        mode: str,
        stream: str,
        events: int = 0,
        *extra: str,
        url: str | None = None,
    ) -> dict[str, Any]:
        """Run ``python -m bench.<module> <mode>`` on a fresh group; return its JSON.

        ``url``: another Redis than the benchmark's (its CPU is then not counted here).
        """
        self._groups += 1
        group = f"{module}-{mode}-{self._groups}"
        cmd = [sys.executable, "-m", f"bench.{module}", mode, "--url", url or self.url]
        cmd += ["--stream", stream, "--group", group, "--events", str(events), *extra]
        redis_cpu = self._redis_cpu() if url is None else None
        started = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False
        )
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            msg = f"{module} {mode} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            raise ChildError(msg)
        result: dict[str, Any] = json.loads(lines[-1])
        result["child_seconds"] = time.perf_counter() - started
        if redis_cpu is not None and events and not result.get("skipped"):
            result["redis_cpu_us_per_event"] = (self._redis_cpu() - redis_cpu) / events * 1e6
        return result

    def fill(
        self,
        stream: str,
        kind: str,
        events: int,
        chats: int | None = None,
        *extra: str,
        url: str | None = None,
    ) -> dict[str, Any]:
        """Pre-fill ``stream`` from a subprocess (its memory never counts anywhere)."""
        cmd = [sys.executable, "-m", "bench.fill", url or self.url, stream, kind, str(events)]
        cmd += extra
        if chats is not None:
            cmd += ["--chats", str(chats)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=900, cwd=ROOT, check=False
        )
        if proc.returncode != 0:
            msg = f"fill {stream} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            raise ChildError(msg)
        result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        say(f"  filled {stream}: {events:,} events in {result['seconds']:.1f} s")
        return result

    def _redis_cpu(self) -> float | None:
        try:
            with open(f"/proc/{self._redis_pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def attempt(self, what: str, func: Any, *args: Any) -> Any:
        """Run one measurement; a failure is recorded and the run goes on."""
        try:
            return func(*args)
        except (ChildError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError) as exc:
            self.results["errors"].append(f"{what}: {exc}")
            say(f"  {what} FAILED: {exc}")
            return None

    # -- scenarios -----------------------------------------------------------------------

    def drain(self) -> None:
        s, r = self.sizes, self.results
        say(f"drain: {s.drain_events:,} events, no-op handler, fresh group per run")
        self.fill("drain", "drain", s.drain_events)
        drain = self.drain_rounds(DRAIN_CONTENDERS, "drain")
        drain["v040"] = self.attempt(
            "codex-bot 0.4.0-style", self.child, "v040_baseline", "drain", "drain", s.drain_events
        )
        say(f"  codex-bot 0.4.0-style: {_eps(drain['v040'])}{_acked(drain['v040'])}")
        drain["faststream"] = self._faststream_drain()
        if s.extras:
            drain["codex_bot_no_hiredis"] = self.attempt(
                "codex no hiredis",
                self.child,
                "codex",
                "drain",
                "drain",
                s.drain_events,
                "--no-hiredis",
            )
            say(f"  codex_bot without hiredis: {_eps(drain['codex_bot_no_hiredis'])}")
            r["codex_bot_eps_no_hiredis"] = _get(drain["codex_bot_no_hiredis"], "eps")
        r["drain"] = drain
        r["raw_eps"] = _get(drain["raw"], "eps")
        r["codex_bot_eps"] = _get(drain["codex_bot"], "eps")
        r["codex_bot_metrics_eps"] = _get(drain["codex_bot_metrics"], "eps")
        if r["codex_bot_eps"] and r["codex_bot_metrics_eps"]:
            r["metrics_overhead"] = 1 - r["codex_bot_metrics_eps"] / r["codex_bot_eps"]
            pairs = zip(drain["codex_bot_runs"], drain["codex_bot_metrics_runs"], strict=False)
            r["metrics_overhead_per_round"] = [1 - on["eps"] / off["eps"] for off, on in pairs]
        r["v040_eps"] = _get(drain["v040"], "eps")
        r["faststream_eps"] = _get(drain["faststream"], "eps")
        if r["codex_bot_eps"] and r["raw_eps"]:
            r["codex_vs_raw"] = r["codex_bot_eps"] / r["raw_eps"]
        if r["codex_bot_eps"] and r["v040_eps"]:
            r["codex_vs_v040"] = r["codex_bot_eps"] / r["v040_eps"]
        for name in ("codex_bot", "codex_bot_metrics", "raw"):
            if drain[name]:
                r[f"{name}_cpu_us_per_event"] = drain[name]["cpu_us_per_event"]
        r["raw_read_count"] = _get(drain["raw"], "read_count")
        if drain["codex_bot"]:
            r["codex_bot_reads"] = {
                k: drain["codex_bot"].get(k)
                for k in ("entries_per_read", "read_count_histogram", "ids_per_ack", "ack_calls")
            }

    def drain_rounds(
        self, contenders: tuple[tuple[str, str, tuple[str, ...]], ...], stream: str
    ) -> dict[str, Any]:
        """``rounds`` of ``drain_events`` drains of ``stream``: (name, module, extra arguments)."""
        events = self.sizes.drain_events
        return self.rounds(
            {
                name: functools.partial(self.child, module, "drain", stream, events, *extra)
                for name, module, extra in contenders
            }
        )

    def rounds(self, contenders: dict[str, Callable[[], dict[str, Any]]]) -> dict[str, Any]:
        """Run every contender ``repeat`` times, interleaved, so a noisy neighbour slows
        every contender alike; return each one's runs (``<name>_runs``) and median run."""
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
        for n in range(self.sizes.repeat):
            for name, contender in contenders.items():
                run = self.attempt(name, contender)
                if run:
                    runs[name].append(run)
                    say(f"  {name} run {n + 1}/{self.sizes.repeat}: {_eps(run)}{_acked(run)}")
        result: dict[str, Any] = {f"{name}_runs": found for name, found in runs.items()}
        for name, found in runs.items():
            result[name] = median_run(found)
        return result

    def _faststream_drain(self) -> dict[str, Any] | None:
        reason = None if self.faststream else "disabled with --no-faststream"
        reason = reason or faststream_unavailable()
        if reason:
            self.results["notes"].append(f"FastStream skipped: {reason}")
            say(f"  FastStream skipped: {reason}")
            return {"skipped": reason}
        total, cap = (
            self.sizes.drain_events,
            min(self.sizes.faststream_events, self.sizes.drain_events),
        )
        start_id = "0"
        if cap < total:
            # the group starts before the last `cap` entries: the same content, fewer of them
            start_id = self.client.xrevrange("drain", count=cap + 1)[-1][0].decode()
            self.results["notes"].append(
                f"FastStream drained the last {cap:,} of the {total:,} entries; events/s "
                "measured on those (it is sequential, so the rate does not depend on the backlog)"
            )
        run = self.attempt(
            "faststream",
            self.child,
            "faststream_sub",
            "drain",
            "drain",
            cap,
            "--start-id",
            start_id,
        )
        say(f"  FastStream ({cap:,} events): {_eps(run)}{_acked(run)}")
        return run

    def latency(self) -> None:
        s, r = self.sizes, self.results
        n = int(s.lat_rate * s.lat_seconds)
        say(f"latency: {s.lat_rate:.0f} events/s for {s.lat_seconds:.0f} s ({n:,} events)")
        extra = ("--rate", str(s.lat_rate), "--seconds", str(s.lat_seconds))
        lat: dict[str, Any] = {}
        lat["codex_bot"] = self.attempt(
            "latency codex", self.child, "codex", "latency", "lat:codex", n, *extra
        )
        if s.extras:
            lat["raw"] = self.attempt(
                "latency raw", self.child, "raw_redis", "latency", "lat:raw", n, *extra
            )
            reason = faststream_unavailable() if self.faststream else "disabled"
            if reason:
                lat["faststream"] = {"skipped": reason}
            else:
                lat["faststream"] = self.attempt(
                    "latency faststream",
                    self.child,
                    "faststream_sub",
                    "latency",
                    "lat:fs",
                    n,
                    *extra,
                )
        for name, run in lat.items():
            if run and not run.get("skipped"):
                say(
                    f"  {name}: p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                    f"max {run['max_ms']:.2f} ms ({run['events']}/{run['expected']} events)"
                )
        r["latency"] = lat
        r["lat_p50_ms"] = _get(lat["codex_bot"], "p50_ms")
        r["lat_p99_ms"] = _get(lat["codex_bot"], "p99_ms")
        for name in ("raw", "faststream"):
            r[f"{name}_lat_p50_ms"] = _get(lat.get(name), "p50_ms")
            r[f"{name}_lat_p99_ms"] = _get(lat.get(name), "p99_ms")

    def slow(self) -> None:
        s, r = self.sizes, self.results
        say(f"slow: {s.slow_events:,} events over {s.slow_chats} chats, 50 ms handlers")
        kinds = [("round_robin", "ordered")] + ([("shuffled", "shuffled")] if s.extras else [])
        slow: dict[str, Any] = {}
        for name, kind in kinds:
            stream = f"slow:{name}"
            self.fill(stream, kind, s.slow_events, s.slow_chats)
            run = self.attempt(f"slow {name}", self.child, "codex", "slow", stream, s.slow_events)
            slow[name] = run
            if run:
                say(
                    f"  {name}: {run['seconds']:.2f} s, order ok: {run['order_ok']}, "
                    f"peak running {run['peak_running']}"
                )
        r["slow"] = slow
        r["slow_s"] = _get(slow.get("round_robin"), "seconds")
        r["slow_order_ok"] = _get(slow.get("round_robin"), "order_ok")
        if "shuffled" in slow:
            r["slow_shuffled_s"] = _get(slow["shuffled"], "seconds")
            r["slow_shuffled_order_ok"] = _get(slow["shuffled"], "order_ok")

    def broadcast(self) -> None:
        from bench import broadcast  # loads aiogram and the Bot API stand-in

        broadcast.run(self)

    def cluster(self) -> None:
        from bench import cluster  # starts a Redis Cluster of its own

        cluster.run(self)

    def big_entry(self) -> None:
        from bench import big_entry

        big_entry.run(self)

    def partitions(self) -> None:
        from bench import partitions  # the partitioned drain and the failover

        partitions.run(self)

    def memory(self) -> None:
        s, r = self.sizes, self.results
        say(f"memory: peak RSS while draining {s.memory_events:,} events")
        self.fill("memory", "drain", s.memory_events)
        run = self.attempt("memory", self.child, "codex", "memory", "memory", s.memory_events)
        r["memory"] = run
        if run:
            say(
                f"  growth {run['rss_growth_mb']:.1f} MB (idle {run['rss_idle_mb']:.1f} MB, "
                f"peak {run['rss_peak_mb']:.1f} MB), {_eps(run)}"
            )
            r["rss_growth_mb"] = run["rss_growth_mb"]
            r["rss_idle_mb"] = run["rss_idle_mb"]
            r["rss_peak_mb"] = run["rss_peak_mb"]


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not runs:
        return None
    eps = statistics.median_low(run["eps"] for run in runs)
    return next(run for run in runs if run["eps"] == eps)


def _get(run: dict[str, Any] | None, key: str) -> Any:
    return None if not run or run.get("skipped") else run.get(key)


def _eps(run: dict[str, Any] | None) -> str:
    eps = _get(run, "eps")
    return "-" if eps is None else f"{eps:,.0f} events/s"


def _acked(run: dict[str, Any] | None) -> str:
    if not run or run.get("skipped") or run.get("all_acked"):
        return ""
    return f"  (NOT all acked: {run.get('group')})"


def say(text: str) -> None:
    print(text, flush=True)
