"""``python -m bench [--quick] [SCENARIO ...]``: run, print, JSON (scenarios: ``bench.sizes``).

Starts a throwaway redis-server (no persistence), pre-fills the streams in subprocesses,
runs each contender in a subprocess of its own on that one server, prints the table with
the targets next to the numbers and writes ``bench/results.json`` (a ``--quick``
or partial run writes ``results-quick.json`` / ``results-partial.json`` instead). A
contender that fails is reported and makes the exit status 1; a missed target does not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import redis

from bench import report
from bench.common import hiredis_version
from bench.scenarios import ROOT, Bench, ChildError, say
from bench.sizes import FULL, QUICK, SCENARIOS


def machine(client: redis.Redis) -> dict[str, Any]:
    """Where the numbers came from."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, Any] = {}
    for package in ("redis", "faststream", "codex_bot"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_server": client.info("server")["redis_version"],
        "redis_py": versions["redis"],
        "hiredis": hiredis_version(),
        "faststream": versions["faststream"],
        "codex_bot": versions["codex_bot"],
        "loadavg_start": list(os.getloadavg()),
    }


def _default_out(quick: bool, scenarios: list[str]) -> str:
    """``results.json`` only for a full run of everything; a smaller run never overwrites it."""
    if quick:
        return "results-quick.json"
    return "results.json" if len(scenarios) == len(SCENARIOS) else "results-partial.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "scenarios", nargs="*", metavar="SCENARIO", help=f"{', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke test")
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default: bench/results.json for a full run of every scenario, "
        "else bench/results-quick.json or bench/results-partial.json)",
    )
    parser.add_argument(
        "--no-faststream", action="store_true", help="skip the FastStream contender"
    )
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = [s for s in SCENARIOS if s in args.scenarios] or list(SCENARIOS)
    sizes = QUICK if args.quick else FULL
    out = args.out or ROOT / "bench" / _default_out(args.quick, scenarios)
    started = time.perf_counter()
    from codex_bot.testing.redis_server import RedisServer

    with RedisServer() as server:
        bench = Bench(server.url, sizes, faststream=not args.no_faststream)
        results = bench.results
        results["machine"] = machine(bench.client)
        m = results["machine"]
        say(
            f"codex_bot benchmark{' (--quick)' if args.quick else ''}: {m['cpu']}, "
            f"{m['cores']} cores, Python {m['python']}, redis-server {m['redis_server']}, "
            f"redis-py {m['redis_py']}, hiredis {m['hiredis'] or 'absent'}"
        )
        try:
            for scenario in scenarios:
                try:
                    getattr(bench, scenario)()
                except (ChildError, subprocess.TimeoutExpired) as exc:
                    results["errors"].append(f"{scenario}: {exc}")
                    say(f"  {scenario} FAILED: {exc}")
        finally:
            bench.close()
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    if results["machine"]["loadavg_start"][0] > 0.5:
        results["notes"].append(
            f"load average {results['machine']['loadavg_start'][0]:.2f} at start: other "
            "processes shared the 2 cores; compare cpu us/event, rerun on a quiet machine"
        )
    results["config"] = {**asdict(sizes), "quick": args.quick, "scenarios": scenarios}
    results["targets"] = report.targets(results)
    results["seconds"] = time.perf_counter() - started
    results["timestamp"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out.write_text(json.dumps(results, indent=2) + "\n")
    table = report.rows(results)
    say("")
    say(report.render(table))
    if args.markdown:
        say("")
        say(report.render(table, markdown=True))
    for note in results["notes"]:
        say(f"note: {note}")
    if args.quick:
        say("note: --quick counts are too small for the targets to mean anything")
    for error in results["errors"]:
        say(f"error: {error.splitlines()[0]}")
    say(f"wrote {out} ({results['seconds']:.0f} s)")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
