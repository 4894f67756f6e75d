"""The benchmark runs end to end (``--quick``: drain and broadcast, partitions, cluster and
big_entry) and reports every key."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from bench.report import render, rows, targets
from bench.sizes import REQUIRED_KEYS
from tests._helpers import ROOT, run_python, without_package


def run_quick(tmp_path: Path, *scenarios: str, timeout: float) -> tuple[str, dict[str, Any]]:
    """``python -m bench --quick SCENARIOS``: what it printed, the results it wrote."""
    out = tmp_path / "results.json"
    proc = run_python(
        "-m", "bench", "--quick", *scenarios, "--out", str(out), cwd=ROOT, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results: dict[str, Any] = json.loads(out.read_text())
    assert set(REQUIRED_KEYS) <= set(results)
    return proc.stdout, results


@pytest.mark.timeout(120)
def test_quick_drain_and_broadcast_write_every_key(tmp_path: Path) -> None:
    stdout, results = run_quick(tmp_path, "drain", "broadcast", timeout=110)
    for key in ("raw_eps", "codex_bot_eps", "codex_bot_metrics_eps", "v040_eps"):
        assert results[key] > 0, key
    assert results["metrics_overhead"] is not None
    for contender in ("raw", "codex_bot", "codex_bot_metrics"):
        assert results["drain"][contender]["all_acked"], results["drain"][contender]
    assert results["drain"]["v040"]["group"]["pending"] == 0
    if importlib.util.find_spec("faststream") is None:
        assert results["faststream_eps"] is None
        assert any("FastStream skipped" in note for note in results["notes"])
    else:
        assert results["faststream_eps"] > 0
    assert results["machine"]["cores"]
    assert "codex_bot, default settings" in stdout

    # the broadcast: two replicas split the partitions, everything arrives, every chat in order
    broadcast = results["broadcast"]
    assert broadcast["delivered"] == broadcast["events"] == 330
    assert broadcast["duplicates"] == 0
    assert sum(broadcast["handled"]) == 330
    assert min(broadcast["handled"]) > 0
    held = [replica["partitions"] for replica in broadcast["replicas"]]
    assert held == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert broadcast["chats_on_both"] == 0
    assert results["tg_dead"] == 0
    assert results["tg_order_ok"] is True
    assert broadcast["replica_order_ok"] is True
    assert 0 < results["tg_rate_ratio"] < 1.0  # never above the limit; --quick is too short
    assert isinstance(results["tg_floods"], int)  # 0 on a quiet machine: see make bench
    assert 0 < results["tg_limiter_p99_ms"] < 50
    assert broadcast["limiter"]["waited"] == 0
    assert "flood control: added to a send that does not wait" in stdout


@pytest.mark.timeout(120)
def test_quick_cluster_and_big_entry_write_their_keys(tmp_path: Path) -> None:
    stdout, results = run_quick(tmp_path, "cluster", "big_entry", timeout=110)

    # the cluster: every contender drained everything, the partitions on every shard
    for key in ("cluster_eps", "cluster_partitioned_eps", "cluster_vs_single"):
        assert results[key] > 0, key
    cluster = results["cluster"]
    for contender in ("single", "cluster", "partitioned"):
        assert cluster[contender]["all_acked"], cluster[contender]
        assert cluster[contender]["events"] == 3_000
        # --quick is short enough for Redis's CPU accounting to show no tick at all
        assert cluster[contender]["redis_cpu_us_per_event"] >= 0
    assert cluster["partitioned"]["owned_partitions"] == list(range(6))
    assert cluster["partitions_per_shard"] == [2, 2, 2]
    assert "one {hash-tagged} stream" in stdout

    # the big entry: each form arrived intact, was acknowledged, and RSS was measured
    assert 5.0 <= results["big_entry_mb"] < 5.1
    assert results["big_entry_rss_ratio"] > 0.5  # the entry is in memory at least once
    assert results["big_entry_ok"] is True
    for form in ("json", "plain"):
        run = results["big_entry"][form]
        assert run["intact"] and run["acked"], run
        assert run["dead_letters"] == 0
        assert run["rss_samples"] > 0
    assert "big entry 5 MB, json: field" in stdout


@pytest.mark.timeout(90)
def test_quick_partitions_write_their_keys(tmp_path: Path) -> None:
    stdout, results = run_quick(tmp_path, "partitions", timeout=80)
    assert results["codex_bot_p1_eps"] > 0
    assert results["partitions_baseline_eps"] > 0
    assert results["partitions_overhead"] is not None
    drain = results["partitions"]
    assert drain["p1"]["all_acked"], drain["p1"]
    assert drain["p1"]["partitions"] == 1
    assert drain["baseline"]["all_acked"], drain["baseline"]
    # the failover: the dead replica's partitions are read again, nothing is lost
    failover = drain["failover"]
    assert results["failover_lease_ttl_s"] == 1.0
    assert 0 < results["failover_gap_s"] < 30
    assert len(failover["gaps_s"]) == 2  # 6 partitions over 3 replicas
    assert results["failover_all_handled"] is True
    assert failover["unhandled"] == failover["pending_after"] == 0
    assert sorted(len(replica["owned"]) for replica in failover["replicas"]) == [3, 3]
    assert "failover: every event handled afterwards" in stdout


def test_the_drain_profile_runs_and_names_codex_bots_functions() -> None:
    proc = run_python("-m", "bench.profile_drain", "--events", "500", "--top", "60", cwd=ROOT)

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all acked: True" in proc.stdout
    assert "codex_bot/redis/dispatcher.py" in proc.stdout


def test_faststream_missing_is_skipped_with_the_reason(tmp_path: Path) -> None:
    # a package that fails to import stands in for an environment without FastStream
    pythonpath = without_package(tmp_path, "faststream")
    args = ["drain", "--url", "redis://unused", "--stream", "s", "--events", "1"]
    proc = run_python("-m", "bench.faststream_sub", *args, cwd=ROOT, PYTHONPATH=pythonpath)
    assert proc.returncode == 0, proc.stderr
    assert "not installed here" in json.loads(proc.stdout)["skipped"]


def test_targets_and_table_from_partial_results() -> None:
    results: dict[str, object] = dict.fromkeys(REQUIRED_KEYS)
    results.update(lat_p50_ms=0.4, lat_p99_ms=4.0, rss_growth_mb=5.0)
    results.update(tg_floods=0, tg_limiter_p99_ms=2.0)
    results["targets"] = verdicts = targets(results)
    by_name = {t["name"]: t["pass"] for t in verdicts}
    assert by_name == {
        "drain_vs_raw": None,
        "drain_vs_v040": None,
        "lat_p50_ms": True,
        "lat_p99_ms": False,
        "slow_s": None,
        "slow_order_ok": None,
        "rss_growth_mb": True,
        "metrics_overhead": None,
        "tg_rate_ratio": None,
        "tg_floods": True,
        "tg_dead": None,
        "tg_order_ok": None,
        "tg_limiter_p99_ms": False,
        "cluster_vs_single": None,
        "big_entry_rss_ratio": None,
        "partitions_overhead": None,
        "failover_gap_s": None,
        "failover_all_handled": None,
    }
    assert render(rows(results)).startswith("scenario")
