"""The benchmark's targets, checked against the results, and the table printed from them."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

RAW_SHARE = 0.60
V040_MULTIPLE = 10.0
P50_MS = 1.0
P99_MS = 3.0
SLOW_S = 1.5
RSS_MB = 20.0
METRICS_OVERHEAD = 0.10
TG_RATE_SHARE = 0.95
TG_LIMITER_P99_MS = 1.0
CLUSTER_SHARE = 0.80
BIG_ENTRY_RATIO = 5.0
PARTITIONS_OVERHEAD = 0.10
FAILOVER_MARGIN_S = 1.0

Row = tuple[str, str, str, str]
"""(what, measured, target, PASS/MISS or a note)."""


def _verdict(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "PASS" if ok else "MISS"


def _eps(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ev/s"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: name, measured value, the bound, and whether it is met (None: not run)."""
    codex, raw, v040 = r.get("codex_bot_eps"), r.get("raw_eps"), r.get("v040_eps")
    vs_raw = codex / raw if codex and raw else None
    vs_v040 = codex / v040 if codex and v040 else None
    p50, p99 = r.get("lat_p50_ms"), r.get("lat_p99_ms")
    slow, order = r.get("slow_s"), r.get("slow_order_ok")
    rss = r.get("rss_growth_mb")
    return [
        _target("drain_vs_raw", vs_raw, f">= {RAW_SHARE:.0%} of raw redis-py", RAW_SHARE, "ge"),
        _target(
            "drain_vs_v040", vs_v040, f">= {V040_MULTIPLE:.0f}x 0.4.0-style", V040_MULTIPLE, "ge"
        ),
        _target("lat_p50_ms", p50, f"<= {P50_MS} ms", P50_MS, "le"),
        _target("lat_p99_ms", p99, f"<= {P99_MS} ms", P99_MS, "le"),
        _target("slow_s", slow, f"<= {SLOW_S} s", SLOW_S, "le"),
        {
            "name": "slow_order_ok",
            "value": order,
            "target": "every chat in stream order",
            "pass": order,
        },
        _target("rss_growth_mb", rss, f"<= {RSS_MB:.0f} MB", RSS_MB, "le"),
        _target(
            "metrics_overhead",
            r.get("metrics_overhead"),
            f"< {METRICS_OVERHEAD:.0%} slower",
            METRICS_OVERHEAD,
            "le",
        ),
        *_broadcast_targets(r),
        *_cluster_targets(r),
        *_partitions_targets(r),
    ]


def _broadcast_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    order = r.get("tg_order_ok")
    return [
        _target(
            "tg_rate_ratio",
            r.get("tg_rate_ratio"),
            f">= {TG_RATE_SHARE:.0%} of per_second",
            TG_RATE_SHARE,
            "ge",
        ),
        _target("tg_floods", r.get("tg_floods"), "0", 0, "le"),
        _target("tg_dead", r.get("tg_dead"), "0", 0, "le"),
        {
            "name": "tg_order_ok",
            "value": order,
            "target": "every chat in stream order, across replicas",
            "pass": order,
        },
        _target(
            "tg_limiter_p99_ms",
            r.get("tg_limiter_p99_ms"),
            f"p99 <= {TG_LIMITER_P99_MS:g} ms",
            TG_LIMITER_P99_MS,
            "le",
        ),
    ]


def _cluster_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _target(
            "cluster_vs_single",
            r.get("cluster_vs_single"),
            f">= {CLUSTER_SHARE:.0%} of one Redis",
            CLUSTER_SHARE,
            "ge",
        ),
        _target(
            "big_entry_rss_ratio",
            r.get("big_entry_rss_ratio"),
            f"<= {BIG_ENTRY_RATIO:g}x the entry",
            BIG_ENTRY_RATIO,
            "le",
        ),
    ]


def _partitions_targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    ttl, handled = r.get("failover_lease_ttl_s"), r.get("failover_all_handled")
    bound = math.inf if ttl is None else ttl + FAILOVER_MARGIN_S
    return [
        _target(
            "partitions_overhead",
            r.get("partitions_overhead"),
            f"partitions=1 < {PARTITIONS_OVERHEAD:.0%} slower than none",
            PARTITIONS_OVERHEAD,
            "le",
        ),
        _target(
            "failover_gap_s",
            r.get("failover_gap_s"),
            f"<= lease_ttl + {FAILOVER_MARGIN_S:g} s" + ("" if ttl is None else f" ({bound:g} s)"),
            bound,
            "le",
        ),
        {
            "name": "failover_all_handled",
            "value": handled,
            "target": "every event handled, none pending",
            "pass": handled,
        },
    ]


def _target(name: str, value: float | None, text: str, bound: float, op: str) -> dict[str, Any]:
    ok = None if value is None else (value >= bound if op == "ge" else value <= bound)
    return {"name": name, "value": value, "target": text, "pass": ok}


def rows(r: dict[str, Any]) -> list[Row]:
    """The table: one row per contender or measurement, targets next to the numbers."""
    verdicts = {t["name"]: t for t in r.get("targets", [])}
    out: list[Row] = []
    if r.get("drain"):
        out.extend(_drain_rows(r, r["drain"], verdicts))
    if r.get("latency"):
        out.extend(_latency_rows(r["latency"], verdicts))
    if r.get("slow"):
        out.extend(_slow_rows(r["slow"], verdicts))
    if r.get("broadcast"):
        out.extend(_broadcast_rows(r["broadcast"], verdicts))
    if r.get("cluster"):
        out.extend(_cluster_rows(r, r["cluster"], verdicts))
    if r.get("big_entry"):
        out.extend(_big_entry_rows(r["big_entry"], verdicts))
    if r.get("partitions"):
        out.extend(_partitions_rows(r, r["partitions"], verdicts))
    if r.get("memory"):
        mem, verdict = r["memory"], verdicts["rss_growth_mb"]
        out.append(
            (
                f"memory: drain {mem['events']:,} ev, peak - idle RSS",
                f"+{mem['rss_growth_mb']:.1f} MB (idle {mem['rss_idle_mb']:.1f}, "
                f"peak {mem['rss_peak_mb']:.1f})",
                verdict["target"],
                _verdict(verdict["pass"]),
            )
        )
    return out


def _measured(eps: float | None, run: dict[str, Any] | None) -> str:
    if eps is None or not run:
        return _eps(eps)
    return f"{_eps(eps)} (cpu {run['cpu_us_per_event']:.1f} us/ev)"


def _drain_rows(r: dict[str, Any], drain: dict[str, Any], verdicts: dict[str, Any]) -> list[Row]:
    n = r["config"]["drain_events"]
    share, multiple = verdicts["drain_vs_raw"], verdicts["drain_vs_v040"]
    out: list[Row] = [
        (
            f"drain {n:,} ev: raw redis-py",
            _measured(r.get("raw_eps"), drain.get("raw")),
            "",
            "COUNT 100, XACK pipelined",
        ),
        (
            "drain: codex_bot, default settings",
            _measured(r.get("codex_bot_eps"), drain.get("codex_bot")),
            share["target"],
            _verdict(share["pass"])
            + ("" if share["value"] is None else f" ({share['value']:.0%})"),
        ),
        (
            "drain: codex-bot 0.4.0-style baseline",
            _measured(r.get("v040_eps"), drain.get("v040")),
            "codex_bot " + multiple["target"],
            _verdict(multiple["pass"])
            + ("" if multiple["value"] is None else f" ({multiple['value']:.1f}x)"),
        ),
    ]
    fast = drain.get("faststream") or {}
    if fast.get("skipped"):
        out.append(("drain: FastStream StreamSub", "skipped", "", fast["skipped"]))
    elif fast:
        events = fast.get("events") or 0
        note = f"{events:,} ev (capped)" if events and events < n else ""
        out.append(
            ("drain: FastStream StreamSub", _measured(r.get("faststream_eps"), fast), "", note)
        )
    if drain.get("codex_bot_no_hiredis"):
        out.append(
            (
                "drain: codex_bot without hiredis",
                _measured(r.get("codex_bot_eps_no_hiredis"), drain["codex_bot_no_hiredis"]),
                "",
                "extra",
            )
        )
    if "metrics_overhead" in verdicts and r.get("codex_bot_metrics_eps"):
        out.insert(2, _metrics_row(r, drain, verdicts))
    return out


def _metrics_row(r: dict[str, Any], drain: dict[str, Any], verdicts: dict[str, Any]) -> Row:
    verdict = verdicts["metrics_overhead"]
    return (
        "drain: codex_bot, metrics on (a scrape/s)",
        _measured(r.get("codex_bot_metrics_eps"), drain.get("codex_bot_metrics")),
        verdict["target"],
        _overhead_verdict(verdict),
    )


def _overhead_verdict(verdict: dict[str, Any]) -> str:
    overhead = verdict["value"]
    return _verdict(verdict["pass"]) + ("" if overhead is None else f" ({_slower(overhead)})")


def _slower(overhead: float) -> str:
    return f"{overhead:.1%} slower" if overhead >= 0 else f"{-overhead:.1%} faster"


def _with_redis_cpu(eps: float | None, run: dict[str, Any] | None) -> str:
    """Events/s with the CPU per event of the consumer and of redis-server."""
    if eps is None or not run or run.get("redis_cpu_us_per_event") is None:
        return _measured(eps, run)
    cpu, redis_cpu = run["cpu_us_per_event"], run["redis_cpu_us_per_event"]
    return f"{_eps(eps)} (cpu {cpu:.1f}, redis-server {redis_cpu:.1f} us/ev)"


def _partitions_rows(
    r: dict[str, Any], part: dict[str, Any], verdicts: dict[str, Any]
) -> list[Row]:
    n, config = r["config"]["drain_events"], r["config"]
    out: list[Row] = [
        (
            f"partitions: drain {n:,} ev, codex_bot, none",
            _with_redis_cpu(r.get("partitions_baseline_eps"), part.get("baseline")),
            "",
            "interleaved with partitions=1",
        ),
        (
            "partitions: drain, codex_bot, partitions=1",
            _with_redis_cpu(r.get("codex_bot_p1_eps"), part.get("p1")),
            verdicts["partitions_overhead"]["target"],
            _overhead_verdict(verdicts["partitions_overhead"]),
        ),
    ]
    run = part.get("failover")
    if run:
        gap, handled = verdicts["failover_gap_s"], verdicts["failover_all_handled"]
        measured = "-" if run["gap_s"] is None else f"{run['gap_s']:.2f} s"
        out.append(
            (
                f"failover: {config['failover_replicas']} replicas, "
                f"{config['failover_partitions']} partitions, one SIGKILLed",
                f"{measured} from the kill to the new owner's first handler "
                f"(lease_ttl {run['lease_ttl']:g} s, {config['failover_rate']:g} ev/s)",
                gap["target"],
                _verdict(gap["pass"]),
            )
        )
        out.append(
            (
                "failover: every event handled afterwards",
                f"{run['events'] - run['unhandled']:,}/{run['events']:,} handled, "
                f"{run['duplicates']} twice, {run['pending_after']} pending",
                handled["target"],
                _verdict(handled["pass"]),
            )
        )
    return out


def _latency_rows(lat: dict[str, Any], verdicts: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    labels = (("codex_bot", "codex_bot"), ("raw", "raw redis-py"), ("faststream", "FastStream"))
    for name, label in labels:
        run = lat.get(name)
        if not run:
            continue
        if run.get("skipped"):
            out.append((f"latency: {label}", "skipped", "", run["skipped"]))
            continue
        measured = (
            f"p50 {_ms(run['p50_ms'])}, p99 {_ms(run['p99_ms'])}, max {_ms(run['max_ms'])} ms"
        )
        if name == "codex_bot":
            ok = [verdicts["lat_p50_ms"]["pass"], verdicts["lat_p99_ms"]["pass"]]
            verdict = _verdict(None if None in ok else all(ok))
            title = f"latency {run['expected']:,} ev at 500 ev/s: codex_bot"
            out.append((title, measured, f"p50 <= {P50_MS:g}, p99 <= {P99_MS:g} ms", verdict))
        else:
            out.append((f"latency: {label}", measured, "", "reference"))
    return out


def _slow_rows(slow: dict[str, Any], verdicts: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for name, label in (("round_robin", "chats round-robin"), ("shuffled", "chats shuffled")):
        run = slow.get(name)
        if not run:
            continue
        order = "order exact" if run["order_ok"] else "ORDER BROKEN"
        measured = f"{run['seconds']:.2f} s, {order}, {run['peak_running']} running at peak"
        if name == "round_robin":
            ok = [verdicts["slow_s"]["pass"], verdicts["slow_order_ok"]["pass"]]
            verdict = _verdict(None if None in ok else all(ok))
            title = f"slow 50 ms: {run['events']:,} ev, {run['chats']} {label}"
            out.append((title, measured, f"<= {SLOW_S:g} s, order exact", verdict))
        else:
            out.append((f"slow 50 ms: {label}", measured, "", "extra"))
    return out


def _broadcast_rows(run: dict[str, Any], verdicts: dict[str, Any]) -> list[Row]:
    rate, floods, dead = verdicts["tg_rate_ratio"], verdicts["tg_floods"], verdicts["tg_dead"]
    order, limiter = verdicts["tg_order_ok"], run.get("limiter")
    on = f" on {run['partitions']} partitions" if run.get("partitions") else ""  # older runs: none
    out: list[Row] = [
        (
            f"broadcast {run['events']:,} msg, 2 replicas{on}, limits x10: rate",
            f"{run['rate']:.0f} msg/s while the bulk went out ({run['bulk_seconds']:.1f} s), "
            f"all in {run['seconds']:.1f} s",
            rate["target"],
            _verdict(rate["pass"]) + f" ({run['rate_ratio']:.1%})",
        ),
        (
            "broadcast: 429s answered, dead letters",
            f"{run['floods']} 429s, {run['dead']} dead, "
            f"{run['delivered']:,}/{run['events']:,} delivered",
            "0 and 0",
            _verdict(
                None if None in (floods["pass"], dead["pass"]) else floods["pass"] and dead["pass"]
            ),
        ),
        (
            "broadcast: every chat's order, across replicas",
            "order exact" if run["order_ok"] else "ORDER BROKEN",
            order["target"],
            _verdict(order["pass"]),
        ),
    ]
    if limiter:
        out.append(
            (
                "flood control: added to a send that does not wait",
                f"p50 {limiter['p50_ms']:.2f}, p99 {limiter['p99_ms']:.2f} ms",
                verdicts["tg_limiter_p99_ms"]["target"],
                _verdict(verdicts["tg_limiter_p99_ms"]["pass"]),
            )
        )
    return out


def _cluster_rows(r: dict[str, Any], run: dict[str, Any], verdicts: dict[str, Any]) -> list[Row]:
    share, spread = verdicts["cluster_vs_single"], run["partitions_per_shard"]
    single, cluster, parts = run.get("single"), run.get("cluster"), run.get("partitioned")
    n = r["config"]["drain_events"]
    ratio = r.get("cluster_partitioned_vs_single")
    return [
        (
            f"cluster {n:,} ev: one Redis (reference)",
            _measured(run.get("single_eps"), single) + _redis_cpu(single),
            "",
            "codex_bot drain, same rounds",
        ),
        (
            "cluster: 3 masters, one {hash-tagged} stream",
            _measured(r.get("cluster_eps"), cluster) + _redis_cpu(cluster),
            share["target"],
            _verdict(share["pass"])
            + ("" if share["value"] is None else f" ({share['value']:.0%})"),
        ),
        (
            f"cluster: {run['partitions']} partitions ({'/'.join(map(str, spread))} per shard)",
            _measured(r.get("cluster_partitioned_eps"), parts) + _redis_cpu(parts),
            "",
            "one processor" + ("" if ratio is None else f" ({ratio:.0%} of one Redis)"),
        ),
    ]


def _redis_cpu(run: dict[str, Any] | None) -> str:
    cpu = (run or {}).get("redis_cpu_us_per_event")
    return "" if cpu is None else f", Redis {cpu:.1f} us/ev"


def _big_entry_rows(runs: dict[str, Any], verdicts: dict[str, Any]) -> list[Row]:
    verdict, out = verdicts["big_entry_rss_ratio"], []
    for form, label in (("json", "json: field"), ("plain", "string field")):
        run = runs.get(form)
        if not run:
            continue
        checks = [] if run["intact"] else ["PAYLOAD CHANGED"]
        checks += [] if run["acked"] else ["NOT ACKED"]
        out.append(
            (
                f"big entry {run['entry_mb']:.0f} MB, {label}: peak RSS growth",
                f"+{run['rss_growth_mb']:.1f} MB = {run['rss_ratio']:.2f}x the entry, "
                + (", ".join(checks) or "intact and acked"),
                verdict["target"],
                _verdict(None if checks else run["rss_ratio"] <= BIG_ENTRY_RATIO),
            )
        )
    return out


def render(table: list[Row], *, markdown: bool = False) -> str:
    """Aligned text columns, or a Markdown table for the README."""
    header: Row = ("scenario", "measured", "target", "result")
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "| --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(row) + " |" for row in table]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(4)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in table]
    return "\n".join(line.rstrip() for line in lines)


def main() -> None:
    """``python -m bench.report [results.json] [--markdown]``: print a saved run's table."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "path", nargs="?", type=Path, default=Path(__file__).with_name("results.json")
    )
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    results = json.loads(args.path.read_text())
    print(render(rows(results), markdown=args.markdown))


if __name__ == "__main__":
    main()
