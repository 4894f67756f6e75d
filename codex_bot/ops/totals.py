"""The stats of a partitioned stream's partitions added up as if they were one stream."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from codex_bot.ops.models import (
    ConsumerInfo,
    DeadLetterStats,
    GroupStats,
    PartitionedStats,
    ReasonCount,
    RetryQueueStats,
    StreamInfo,
    StreamStats,
)
from codex_bot.ops.replies import id_key

TOP_REASONS = 5
"""The most common dead-letter reasons shown, per partition and in total."""


def total_stats(stream: str, dead_stream: str, parts: Sequence[StreamStats]) -> PartitionedStats:
    """Each partition's stats (reasons cut to the most common) and their total.

    Args:
        stream: The partitioned stream's name.
        dead_stream: How to name the partitions' dead-letter streams together.
        parts: Each partition's stats, with every dead-letter reason counted.
    """
    infos = [part.stream for part in parts]
    info = StreamInfo(
        name=stream,
        length=sum(each.length for each in infos),
        first_id=_lowest(each.first_id for each in infos),
        last_id=_highest(each.last_id for each in infos),
    )
    names = dict.fromkeys(group.name for part in parts for group in part.groups)
    groups = tuple(
        _total_group([g for part in parts for g in part.groups if g.name == name]) for name in names
    )
    reasons: Counter[str] = Counter()
    for part in parts:
        reasons.update({r.reason: r.count for r in part.dead_letters.reasons})
    dead = DeadLetterStats(
        stream=dead_stream,
        count=sum(part.dead_letters.count for part in parts),
        reasons=_ranked(reasons),
        sampled=sum(part.dead_letters.sampled for part in parts),
    )
    total = StreamStats(
        stream=info,
        groups=groups,
        dead_letters=dead,
        retries=_total_retries([part.retries for part in parts]),
        server_time_ms=max(part.server_time_ms for part in parts),
    )
    return PartitionedStats(stream, tuple(_cut_reasons(part) for part in parts), total)


def _total_group(groups: Sequence[GroupStats]) -> GroupStats:
    lags = [group.lag for group in groups]
    oldest = min(
        (group for group in groups if group.oldest_pending_id is not None),
        key=lambda group: id_key(group.oldest_pending_id or "0"),
        default=None,
    )
    ages = [
        group.oldest_pending_age_ms for group in groups if group.oldest_pending_age_ms is not None
    ]
    consumers: dict[str, ConsumerInfo] = {}
    for consumer in (c for group in groups for c in group.consumers):
        seen = consumers.get(consumer.name)
        consumers[consumer.name] = (
            consumer
            if seen is None
            else ConsumerInfo(
                consumer.name, seen.pending + consumer.pending, min(seen.idle_ms, consumer.idle_ms)
            )
        )
    return GroupStats(
        name=groups[0].name,
        last_delivered_id=_highest(group.last_delivered_id for group in groups) or "0-0",
        lag=None if None in lags else sum(lag or 0 for lag in lags),
        pending=sum(group.pending for group in groups),
        oldest_pending_id=None if oldest is None else oldest.oldest_pending_id,
        oldest_pending_age_ms=max(ages, default=None),
        consumers=tuple(consumers.values()),
    )


def _total_retries(found: list[RetryQueueStats | None]) -> RetryQueueStats | None:
    retries = [each for each in found if each is not None]
    if not retries:
        return None
    dues = [each.next_due_ms for each in retries if each.next_due_ms is not None]
    return RetryQueueStats(
        retries[0].queue, sum(each.waiting for each in retries), min(dues, default=None)
    )


def _cut_reasons(part: StreamStats) -> StreamStats:
    dead = part.dead_letters
    cut = DeadLetterStats(dead.stream, dead.count, dead.reasons[:TOP_REASONS], dead.sampled)
    return StreamStats(part.stream, part.groups, cut, part.retries, part.server_time_ms)


def _ranked(reasons: Counter[str]) -> tuple[ReasonCount, ...]:
    return tuple(ReasonCount(reason, n) for reason, n in reasons.most_common(TOP_REASONS))


def _lowest(ids: Iterable[str | None]) -> str | None:
    return min((each for each in ids if each), key=id_key, default=None)


def _highest(ids: Iterable[str | None]) -> str | None:
    return max((each for each in ids if each), key=id_key, default=None)
