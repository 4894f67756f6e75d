"""The big_entry scenario: what handling one ``big_entry_mb`` MB entry costs in memory.

A bot process (``python -m bench.big_entry handle``: a ``RedisStreamProcessor`` and a
``BotRedisDispatcher`` wired as in the drain, ``EntryLimits.max_bytes`` raised to twice the
entry as a user expecting such entries would) handles one entry of ``big_entry_mb`` MB
written by another process (``python -m bench.big_entry produce``: ``StreamProducer``, so the
producer's copies never count). Two forms of the same payload, a process each:

- ``json``: ``document=json:{"name": ..., "data": "<base64 text>"}``, a ``json:`` field
  the processor decodes into a dict (the costlier path: text, then the JSON string);
- ``plain``: ``document=<base64 text>``, a string field as it is.

How the memory is measured, in the handling process: it first handles a small entry of the
same form (imports done, connections open, buffers grown once), collects garbage and reads
its resident set size (RSS) as the baseline. Then the producer is started and, until the big
entry is acknowledged, a thread samples RSS every 5 ms (``bench.common.RssSampler``). The
peak is the larger of that sampled peak and the kernel's high-water mark (``ru_maxrss``),
taken only if the big entry raised it above where the warm-up left it: the kernel's mark
misses nothing, the sampler covers the case where an earlier peak hides the entry's.
``big_entry_rss_ratio`` is (peak - baseline) / entry size on the wire, the larger of the two
forms'. The handler hashes the text it received in 1 MB slices (no copy of the whole) and
the result checks the digest against the producer's, that the entry was acknowledged (the
group has nothing pending) and that nothing was dead-lettered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import json
import random
import resource
import sys
import time
from typing import Any

from bench.codex import _processor
from bench.common import (
    EVENT_TYPE,
    RssSampler,
    child_parser,
    connect,
    group_state,
    rss_bytes,
    wait_until,
)
from bench.scenarios import Bench, say
from codex_bot.redis import EntryLimits, RedisStreamStorage, StreamProducer
from codex_bot.redis.codec import encode_event

FORMS = ("json", "plain")
STREAM = "big:{form}"
_MB = 1024 * 1024
_SLICE = _MB
_TIMEOUT = 60.0
WARM_UP_BYTES = 64 * 1024


def run(bench: Bench) -> None:
    """Handle one big entry of each form in a fresh process; fill ``bench.results``."""
    s, r = bench.sizes, bench.results
    say(f"big_entry: one {s.big_entry_mb} MB entry, peak RSS growth while handling it")
    runs: dict[str, Any] = {}
    for form in FORMS:
        extra = ("--mb", str(s.big_entry_mb), "--form", form)
        run = bench.attempt(
            f"big_entry {form}",
            bench.child,
            "big_entry",
            "handle",
            STREAM.format(form=form),
            1,
            *extra,
        )
        runs[form] = run
        if run:
            ok = "intact" if run["intact"] else "NOT INTACT"
            acked = "acked" if run["acked"] else "NOT ACKED"
            say(
                f"  {form}: {run['entry_mb']:.1f} MB entry, +{run['rss_growth_mb']:.1f} MB RSS "
                f"({run['rss_ratio']:.2f}x), {ok}, {acked}, {run['seconds']:.2f} s"
            )
    r["big_entry"] = runs
    done = [run for run in runs.values() if run]
    if done:
        r["big_entry_mb"] = max(run["entry_mb"] for run in done)
        r["big_entry_rss_ratio"] = max(run["rss_ratio"] for run in done)
        r["big_entry_ok"] = len(done) == len(FORMS) and all(
            run["intact"] and run["acked"] for run in done
        )


def document(size: int, form: str, random_state: int = 11) -> dict[str, Any]:
    """The payload: ``size`` bytes of base64 text, as it is or inside a ``json:`` dict."""
    text = base64.b64encode(random.Random(random_state).randbytes(size * 3 // 4)).decode()
    if form == "plain":
        return {"chat_id": 1, "document": text}
    return {"chat_id": 1, "document": {"name": "report.pdf", "data": text}}


def _text_of(payload: dict[str, Any]) -> str:
    doc = payload["document"]
    return doc if isinstance(doc, str) else doc["data"]


def _digest(text: str) -> str:
    """SHA-256 of the text, encoded a slice at a time (never a second copy of the whole)."""
    digest = hashlib.sha256()
    for start in range(0, len(text), _SLICE):
        digest.update(text[start : start + _SLICE].encode())
    return digest.hexdigest()


# -- the children --------------------------------------------------------------------------


async def _produce(args: argparse.Namespace) -> dict[str, Any]:
    """Write one entry of ``args.mb`` MB; report its id, size and the text's digest."""
    payload = document(args.mb * _MB, args.form)
    fields = encode_event(EVENT_TYPE, payload)
    redis = connect(args.url)
    try:
        entry_id = await StreamProducer(redis, args.stream).add_event(EVENT_TYPE, payload)
    finally:
        await redis.aclose()
    return {
        "id": entry_id,
        "entry_bytes": sum(len(k.encode()) + len(v.encode()) for k, v in fields.items()),
        "sha256": _digest(_text_of(payload)),
    }


async def _handle(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up on a small entry, then measure RSS while a producer's big entry is handled."""
    received: list[str] = []

    async def on_document(payload: dict[str, Any], container: Any) -> None:
        received.append(_digest(_text_of(payload)))

    redis = connect(args.url)
    limits = EntryLimits(max_bytes=2 * args.mb * _MB)
    processor = _processor(
        RedisStreamStorage(redis), args.stream, args.group, on_document, entry_limits=limits
    )
    small = document(WARM_UP_BYTES, args.form)
    try:
        await StreamProducer(redis, args.stream).add_event(EVENT_TYPE, small)
        await processor.start_listening()
        await wait_until(lambda: processor.stats.acked >= 1, _TIMEOUT, what="the warm-up entry")
        gc.collect()
        baseline, maxrss_before = rss_bytes(), _maxrss()
        started = time.perf_counter()
        with RssSampler() as sampler:
            produced = await _run_producer(args)
            await wait_until(lambda: processor.stats.acked >= 2, _TIMEOUT, what="the big entry")
        seconds = time.perf_counter() - started
        maxrss_after = _maxrss()
        await processor.stop_listening()
        state = await group_state(redis, args.stream, args.group)
        dead = await redis.xlen(args.stream + ":dead")
    finally:
        await redis.aclose()
    peak = max(sampler.peak, maxrss_after if maxrss_after > maxrss_before else 0)
    entry = produced["entry_bytes"]
    return {
        "form": args.form,
        "entry_mb": entry / _MB,
        "rss_baseline_mb": baseline / _MB,
        "rss_peak_mb": peak / _MB,
        "rss_growth_mb": (peak - baseline) / _MB,
        "rss_ratio": (peak - baseline) / entry,
        "sampled_peak_mb": sampler.peak / _MB,
        "maxrss_before_mb": maxrss_before / _MB,
        "maxrss_after_mb": maxrss_after / _MB,
        "rss_samples": sampler.samples,
        "seconds": seconds,
        "intact": received[-1:] == [produced["sha256"]],
        "acked": state["pending"] == 0 and processor.stats.acked == 2,
        "dead_letters": dead,
        "group": state,
    }


async def _run_producer(args: argparse.Namespace) -> dict[str, Any]:
    cmd = ["-m", "bench.big_entry", "produce", "--url", args.url, "--stream", args.stream]
    cmd += ["--mb", str(args.mb), "--form", args.form]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), _TIMEOUT)
    if proc.returncode != 0:
        msg = f"the producer exited {proc.returncode}: {err.decode()[-2000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(out)
    return result


def _maxrss() -> int:
    """The kernel's high-water mark of this process's RSS, in bytes (Linux counts KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = child_parser(__doc__ or "")
    parser.add_argument("--mb", type=int, default=20, help="the entry's size in MiB")
    parser.add_argument("--form", choices=FORMS, default="json")
    args = parser.parse_args()
    modes = {"handle": _handle, "produce": _produce}
    if args.mode not in modes:
        parser.error(f"unknown mode {args.mode!r}: {', '.join(modes)}")
    result = asyncio.run(modes[args.mode](args))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
