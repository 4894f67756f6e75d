"""Reading a stream's state: its size, its groups and consumers, pending entries, retries."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from codex_bot.ops.errors import GroupNotFoundError, OpsError
from codex_bot.ops.models import (
    ConsumerInfo,
    DeadLetterStats,
    GroupStats,
    PendingEntry,
    ReasonCount,
    RetryQueueStats,
    StreamInfo,
)
from codex_bot.ops.replies import (
    RAW,
    as_map,
    command,
    entries,
    id_key,
    next_id,
    show,
    xinfo_stream,
)
from codex_bot.redis.cluster import route
from codex_bot.redis.constants import DEAD_REASON_FIELD, TYPE_FIELD
from codex_bot.redis.types import AnyRedis

LAG_COUNT_LIMIT = 10_000
"""On Redis 6.2 (no ``lag`` in XINFO GROUPS) the undelivered entries are counted up to this."""
_PAGE = 1000
_JOB_SUFFIX = re.compile(r"[^:]+:\d+|[0-9a-f]{32}")
"""What follows ``<job_prefix>:<stream>:`` in a retry job id: ``<entry id>:<attempt>``, or
a random hex id. It tells ``bot_events``'s jobs from those of a stream ``bot_events:2``."""
_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


async def stream_info(redis: AnyRedis, stream: str) -> StreamInfo:
    """Length and end ids of ``stream``.

    Raises:
        StreamNotFoundError: the stream does not exist.
    """
    info = await xinfo_stream(redis, stream)
    return StreamInfo(
        name=stream,
        length=int(info["length"]),
        first_id=_entry_id(info.get("first-entry")),
        last_id=_entry_id(info.get("last-entry")),
    )


def _entry_id(entry: Any) -> str | None:
    return show(entry[0]) if entry else None


async def xinfo_groups(redis: AnyRedis, stream: str) -> list[dict[str, Any]]:
    """XINFO GROUPS of an existing stream, each group as a dict with ``str`` keys."""
    reply = await command(redis, "XINFO", "GROUPS", stream, key=stream)
    return [as_map(group) for group in reply]


async def group_stats(
    redis: AnyRedis, stream: str, group: dict[str, Any], last_id: str | None
) -> GroupStats:
    """Lag, pending entries and consumers of one group (a row of ``xinfo_groups``)."""
    name = show(group["name"])
    last_delivered = show(group.get("last-delivered-id") or b"0-0")
    try:
        summary = await command(redis, "XPENDING", stream, name, key=stream)
        consumers = await command(redis, "XINFO", "CONSUMERS", stream, name, key=stream)
        first = await command(
            redis, "XPENDING", stream, name, "-", "+", 1, key=stream, parse_detail=True
        )
    except ResponseError as exc:  # the group vanished between the reads
        raise GroupNotFoundError(stream, name, ()) from exc
    oldest = show(first[0]["message_id"]) if first else None
    # how long that entry has gone without a consumer receiving it (or, while a live one holds
    # it, refreshing it): not since it was added, which a backlog makes look stuck
    age_ms = int(first[0]["time_since_delivered"]) if first else None
    lag = group.get("lag")
    if lag is None:
        lag = await _count_after(redis, stream, last_delivered, last_id)
    return GroupStats(
        name=name,
        last_delivered_id=last_delivered,
        lag=None if lag is None else int(lag),
        pending=int(summary.get("pending") or 0),
        oldest_pending_id=oldest,
        oldest_pending_age_ms=age_ms,
        consumers=tuple(_consumer(as_map(row)) for row in consumers),
    )


def _consumer(row: dict[str, Any]) -> ConsumerInfo:
    return ConsumerInfo(show(row["name"]), int(row["pending"]), int(row["idle"]))


async def _count_after(redis: AnyRedis, stream: str, after: str, last_id: str | None) -> int | None:
    """Entries with an id above ``after``, up to ``LAG_COUNT_LIMIT`` (None beyond)."""
    if last_id is None or id_key(last_id) <= id_key(after):
        return 0
    counted, start = 0, next_id(after)
    while counted <= LAG_COUNT_LIMIT:
        reply = await command(redis, "XRANGE", stream, start, "+", "COUNT", _PAGE, key=stream)
        page = entries(reply)
        counted += len(page)
        if len(page) < _PAGE:
            return counted if counted <= LAG_COUNT_LIMIT else None
        start = next_id(page[-1][0])
    return None


async def pending_entries(
    redis: AnyRedis, stream: str, group: str, count: int, consumer: str | None = None
) -> tuple[PendingEntry, ...]:
    """Up to ``count`` pending entries of the group, oldest first, with their event type."""
    args: list[Any] = ["XPENDING", stream, group, "-", "+", count]
    if consumer is not None:
        args.append(consumer)
    rows = await command(redis, *args, key=stream, parse_detail=True)
    routed = await route(redis, stream)
    async with redis.pipeline(transaction=False) as pipe:
        for row in rows:
            entry_id = show(row["message_id"])
            pipe.execute_command("XRANGE", stream, entry_id, entry_id, "COUNT", 1, **RAW, **routed)
        found = await pipe.execute()
    return tuple(
        PendingEntry(
            id=show(row["message_id"]),
            consumer=show(row["consumer"]),
            idle_ms=int(row["time_since_delivered"]),
            deliveries=int(row["times_delivered"]),
            event_type=_type_of(reply),
            stream=stream,
        )
        for row, reply in zip(rows, found, strict=True)
    )


def _type_of(reply: Any) -> str | None:
    for _, fields in entries(reply):
        value = fields.get(TYPE_FIELD.encode())
        return None if value is None else show(value)
    return None


async def dead_letter_stats(
    redis: AnyRedis, dead_stream: str, *, sample: int, top: int | None = 5
) -> DeadLetterStats:
    """Count the letters and their most common reasons over the newest ``sample`` letters."""
    kind = show(await command(redis, "TYPE", dead_stream, key=dead_stream))
    if kind == "none":
        return DeadLetterStats(dead_stream, 0, (), 0)
    if kind != "stream":
        msg = f"key {dead_stream!r} is not a stream (it holds a {kind})"
        raise OpsError(msg)
    count = int(await command(redis, "XLEN", dead_stream, key=dead_stream))
    reasons: Counter[str] = Counter()
    sampled, end = 0, "+"
    reason_field = DEAD_REASON_FIELD.encode()
    while sampled < sample:
        size = min(_PAGE, sample - sampled)
        reply = await command(
            redis, "XREVRANGE", dead_stream, end, "-", "COUNT", size, key=dead_stream
        )
        page = entries(reply)
        reasons.update(show(fields.get(reason_field, b"")) for _, fields in page)
        sampled += len(page)
        if len(page) < size:
            break
        end = "(" + page[-1][0]
    ranked = tuple(ReasonCount(reason, n) for reason, n in reasons.most_common(top))
    return DeadLetterStats(dead_stream, count, ranked, sampled)


async def retry_queue_stats(
    arq_redis: AnyRedis, queue: str, stream: str, job_prefix: str = "codex:retry"
) -> RetryQueueStats:
    """Retry jobs of ``stream`` in arq's queue: ids ``<job_prefix>:<stream>:...``."""
    return (await retries_by_stream(arq_redis, queue, [stream], job_prefix))[stream]


async def retries_by_stream(
    arq_redis: AnyRedis, queue: str, streams: Sequence[str], job_prefix: str = "codex:retry"
) -> dict[str, RetryQueueStats]:
    """Retry jobs of each of ``streams`` in arq's queue, in one pass over the queue.

    Raises:
        OpsError: the queue's key holds something else than a sorted set.
    """
    kind = show(await command(arq_redis, "TYPE", queue, key=queue))
    if kind not in ("zset", "none"):
        msg = f"arq queue {queue!r} is not a sorted set (it holds a {kind})"
        raise OpsError(msg)
    prefix = f"{job_prefix}:"
    shared = os.path.commonprefix(list(streams))  # noqa: RUF071 - names, not paths: per character
    pattern = (prefix + shared).translate(_GLOB_SPECIAL) + "*"
    found: dict[str, list[int]] = {stream: [] for stream in streams}
    cursor = 0
    while True:
        cursor, page = await command(
            arq_redis, "ZSCAN", queue, cursor, "MATCH", pattern, "COUNT", _PAGE, key=queue
        )
        for member, score in page:
            job = show(member).removeprefix(prefix)
            for stream, dues in found.items():
                if job.startswith(stream + ":") and _JOB_SUFFIX.fullmatch(job, len(stream) + 1):
                    dues.append(int(score))
        if int(cursor) == 0:
            break
    return {
        stream: RetryQueueStats(queue, len(dues), min(dues, default=None))
        for stream, dues in found.items()
    }
