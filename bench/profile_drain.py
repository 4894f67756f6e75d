"""Where codex_bot's drain spends its time: ``python -m bench.profile_drain [--events N]``.

Starts a throwaway redis-server, pre-fills ``--events`` entries from a subprocess, drains
them with the benchmark's codex_bot contender (default settings, no-op handler) under
cProfile and prints the functions ranked by own time, in microseconds per event. cProfile
roughly doubles the cost of call-heavy code, so read the ranking and the shares, not the
absolute numbers; ``bench.codex drain`` gives the real rate. For a sampling profile without
that distortion run the drain child under py-spy (``pip install py-spy``)::

    py-spy record -o drain.svg -- python -m bench.codex drain --url ... --stream ... --events N
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from bench.codex import CountingStorage, _drain
from bench.common import connect

ROOT = Path(__file__).resolve().parent.parent


async def _profiled_drain(url: str, events: int, profiler: cProfile.Profile) -> dict[str, object]:
    redis = connect(url)
    args = SimpleNamespace(
        stream="drain", group="profile", events=events, metrics=False, partitions=None
    )
    try:
        profiler.enable()
        result = await _drain(redis, CountingStorage(redis), args)
        profiler.disable()
    finally:
        await redis.aclose()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--sort", default="tottime", choices=["tottime", "cumtime"])
    args = parser.parse_args()
    from codex_bot.testing.redis_server import RedisServer

    with RedisServer() as server:
        subprocess.run(
            [sys.executable, "-m", "bench.fill", server.url, "drain", "drain", str(args.events)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        # CPU time, not wall time: on a shared 2-core box a preempted process would
        # otherwise charge the wait to whatever call it was in (often socket.send)
        profiler = cProfile.Profile(time.process_time)
        result = asyncio.run(_profiled_drain(server.url, args.events, profiler))
    print(
        f"drained {result['events']:,} events in {result['seconds']:.2f} s under cProfile "
        f"({result['eps']:,.0f} events/s, all acked: {result['all_acked']})"
    )
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2 if args.sort == "tottime" else 3],
        reverse=True,
    )
    print(f"{'own us/ev':>9} {'cum us/ev':>9} {'share':>6} {'calls/ev':>8}  function")
    for (filename, line, name), (_, calls, own, cum, _callers) in rows[: args.top]:
        where = _short(filename)
        print(
            f"{own / args.events * 1e6:9.2f} {cum / args.events * 1e6:9.2f} "
            f"{own / total:6.1%} {calls / args.events:8.2f}  {where}:{line}({name})"
        )


def _short(filename: str) -> str:
    for marker in ("site-packages/", f"{ROOT}/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


if __name__ == "__main__":
    main()
