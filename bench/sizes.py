"""What each scenario does and how much of it: the full run and ``--quick``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

SCENARIOS = (
    "drain",
    "latency",
    "slow",
    "memory",
    "broadcast",
    "partitions",
    "cluster",
    "big_entry",
)
REQUIRED_KEYS = (
    "raw_eps",
    "codex_bot_eps",
    "v040_eps",
    "faststream_eps",
    "lat_p50_ms",
    "lat_p99_ms",
    "slow_s",
    "slow_order_ok",
    "rss_growth_mb",
    "tg_rate_ratio",
    "tg_floods",
    "tg_dead",
    "tg_order_ok",
    "tg_limiter_p99_ms",
    "cluster_eps",
    "cluster_vs_single",
    "cluster_partitioned_eps",
    "big_entry_mb",
    "big_entry_rss_ratio",
    "codex_bot_p1_eps",
    "partitions_overhead",
    "failover_gap_s",
    "failover_lease_ttl_s",
    "failover_all_handled",
)


@dataclass(frozen=True)
class Sizes:
    """How much each scenario does; ``--quick`` shrinks everything for a smoke test.

    The ``tg_`` fields are the broadcast's: private chats (one message each), groups,
    messages per group, messages to one busy chat, and the sends timed through the flood
    control afterwards. The cluster scenario drains ``drain_events`` too; ``big_entry_mb``
    is the size of the one big entry of the big_entry scenario.

    The ``failover_`` fields are the partitions scenario's: replica processes, partitions,
    their ``lease_ttl`` and the events per second the producer pushes meanwhile (its
    partitioned drain uses ``drain_events`` and ``repeat``).
    """

    drain_events: int
    faststream_events: int
    repeat: int
    lat_rate: float
    lat_seconds: float
    slow_events: int
    slow_chats: int
    memory_events: int
    tg_private: int
    tg_groups: int
    tg_per_group: int
    tg_busy: int
    tg_limiter_calls: int
    failover_replicas: int
    failover_partitions: int
    failover_lease_ttl: float
    failover_rate: float
    extras: bool
    big_entry_mb: int


FULL = Sizes(
    drain_events=100_000,
    faststream_events=20_000,
    repeat=3,
    lat_rate=500.0,
    lat_seconds=5.0,
    slow_events=2_000,
    slow_chats=200,
    memory_events=200_000,
    tg_private=3_000,
    tg_groups=10,
    tg_per_group=20,
    tg_busy=100,
    tg_limiter_calls=5_000,
    failover_replicas=3,
    failover_partitions=6,
    failover_lease_ttl=2.0,
    failover_rate=500.0,
    extras=True,
    big_entry_mb=20,
)
QUICK = dataclasses.replace(
    FULL,
    drain_events=3_000,
    faststream_events=1_000,
    repeat=1,
    lat_seconds=1.0,
    slow_events=400,
    slow_chats=40,
    memory_events=10_000,
    tg_private=300,
    tg_groups=2,
    tg_per_group=10,
    tg_busy=10,
    tg_limiter_calls=500,
    failover_lease_ttl=1.0,
    failover_rate=200.0,
    extras=False,
    big_entry_mb=5,
)
