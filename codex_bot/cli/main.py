"""``codex-bot``: see what is stuck in a bot's streams, replay dead letters, prune consumers.

Every command talks to the Redis of ``--redis-url`` (default: ``$REDIS_URL``; a Redis
Cluster with ``--cluster``) about ``--stream`` (default ``bot_events``; with
``--partitions N`` all its partitions), prints a table, or JSON with ``--json``, and exits
with status 2 and one line on stderr when the URL, the server, the stream or the group is
wrong.
"""

from __future__ import annotations

from typing import Any

import click
from redis.exceptions import RedisError

from codex_bot import __version__
from codex_bot.cli.base import (
    Ops,
    Target,
    connect,
    describe_redis_error,
    remember_target,
    run,
    target_of,
    target_options,
)
from codex_bot.cli.dead import dead
from codex_bot.cli.params import duration_option
from codex_bot.cli.render import duration, echo_json, plural, table, timestamp
from codex_bot.ops import (
    DEFAULT_ARQ_QUEUE,
    PartitionedStats,
    PendingEntry,
    PruneResult,
    RetryQueueStats,
    StreamStats,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codex-bot")
@target_options
def main(**options: Any) -> None:
    """Operate a codex_bot stream: what is stuck, dead letters, replays, idle consumers.

    The connection and stream options go before the command or after it:
    codex-bot --stream bot_events --partitions 8 stats.
    """
    remember_target(options)


@main.command()
@target_options
@click.option("--arq-queue", default=DEFAULT_ARQ_QUEUE, show_default=True, help="arq's queue.")
@click.option(
    "--arq-redis-url",
    help="Redis arq uses; default: the stream's Redis (with --cluster: none, arq needs one Redis).",
)
def stats(arq_queue: str, arq_redis_url: str | None, **options: Any) -> None:
    """The stream, its groups and consumers, dead letters, and retries waiting in arq.

    Lag (entries no consumer got yet) comes from Redis 7's XINFO GROUPS; on Redis 6.2 it
    is counted, up to 10,000 entries, and shown as "unknown" beyond. With --partitions:
    each partition, then all of them together.
    """
    target = target_of(options)

    async def work(ops: Ops) -> StreamStats | PartitionedStats:
        if not arq_redis_url:
            return await ops.stats(arq_queue=arq_queue)
        arq_redis = connect(target, arq_redis_url, cluster=False)
        try:
            return await ops.stats(arq_redis=arq_redis, arq_queue=arq_queue)
        except RedisError as exc:
            msg = "arq's " + describe_redis_error(arq_redis_url, exc)
            raise target.fail(msg, arq_redis_url) from None
        finally:
            await arq_redis.aclose()

    result = run(target, work)
    if target.as_json:
        echo_json(result)
        return
    if isinstance(result, PartitionedStats):
        click.echo(_partitioned_text(result))
    else:
        click.echo(_stats_text(result))
    if result_retries(result) is None and target.cluster and not arq_redis_url:
        click.echo("\nretries in arq: not looked up (arq needs one Redis: pass --arq-redis-url)")


def result_retries(stats: StreamStats | PartitionedStats) -> RetryQueueStats | None:
    """The retries of a stream's stats, or of all partitions'."""
    return stats.total.retries if isinstance(stats, PartitionedStats) else stats.retries


def _partitioned_text(stats: PartitionedStats) -> str:
    total = stats.total
    several = len({g.name for part in stats.partitions for g in part.groups}) > 1
    rows: list[tuple[Any, ...]] = []
    for part in stats.partitions:
        common = (part.stream.name, part.stream.length)
        tail = (part.dead_letters.count, part.retries.waiting if part.retries else "-")
        for g in part.groups or [None]:
            if g is None:
                cells: tuple[Any, ...] = ("-", "-", "-", "-", 0)
            else:
                lag = "unknown" if g.lag is None else g.lag
                age = duration(g.oldest_pending_age_ms)
                cells = (g.name, lag, g.pending, age, len(g.consumers))
            rows.append((*common, *(cells if several else cells[1:]), *tail))
    headers: tuple[str, ...] = ("PARTITION", "ENTRIES", "GROUP", "LAG", "PENDING")
    headers += ("OLDEST PENDING", "CONSUMERS", "DEAD", "RETRIES")
    if not several:
        headers = headers[:2] + headers[3:]
    info = total.stream
    head = (
        f"stream {stats.stream} in {len(stats.partitions)} partitions: {info.length} "
        f"{'entry' if info.length == 1 else 'entries'}, first {info.first_id or '-'}, "
        f"last {info.last_id or '-'}"
    )
    return "\n".join([head, "", table(headers, rows), "", "all partitions:", _stats_text(total, 2)])


def _stats_text(stats: StreamStats, skip: int = 0) -> str:
    stream = stats.stream
    lines = [
        f"stream {stream.name}: {stream.length} {'entry' if stream.length == 1 else 'entries'}, "
        f"first {stream.first_id or '-'}, last {stream.last_id or '-'}",
        "",
    ][skip:]
    if stats.groups:
        rows = [
            (
                g.name,
                "unknown" if g.lag is None else g.lag,
                g.pending,
                duration(g.oldest_pending_age_ms),
                g.last_delivered_id,
                len(g.consumers),
            )
            for g in stats.groups
        ]
        headers = ("GROUP", "LAG", "PENDING", "OLDEST PENDING", "LAST DELIVERED", "CONSUMERS")
        lines += [table(headers, rows), ""]
        for g in stats.groups:
            if not g.consumers:
                lines += [f"consumers of {g.name}: none yet", ""]
                continue
            consumers = [(c.name, c.pending, duration(c.idle_ms)) for c in g.consumers]
            lines += [f"consumers of {g.name}:", table(("NAME", "PENDING", "IDLE"), consumers), ""]
    else:
        lines += ["no consumer group", ""]
    dead = stats.dead_letters
    lines.append(f"dead letters in {dead.stream}: {dead.count}")
    if dead.reasons:
        note = "" if dead.sampled >= dead.count else f" (of the newest {dead.sampled})"
        lines.append(f"most common reasons{note}:")
        lines.append(table(("COUNT", "REASON"), [(r.count, r.reason) for r in dead.reasons]))
    if stats.retries is not None:
        lines += ["", _retries_text(stats.retries, stats.server_time_ms)]
    return "\n".join(lines)


def _retries_text(retries: RetryQueueStats, now_ms: int) -> str:
    text = f"retries waiting in {retries.queue}: {retries.waiting}"
    if retries.next_due_ms is not None:
        due = retries.next_due_ms - now_ms
        when = f"in {duration(due)}" if due > 0 else f"{duration(-due)} overdue"
        text += f" (next due {when}, {timestamp(retries.next_due_ms)} UTC)"
    return text


@main.command()
@target_options
@click.option(
    "--count", type=click.IntRange(1), default=100, show_default=True, help="At most this many."
)
@click.option("--consumer", help="Only this consumer's entries.")
def pending(count: int, consumer: str | None, **options: Any) -> None:
    """Entries read by a consumer and not acknowledged yet, oldest first."""
    target = target_of(options)
    entries = run(target, lambda ops: ops.pending(count=count, consumer=consumer))
    if target.as_json:
        echo_json(entries)
        return
    if not entries:
        click.echo("nothing pending")
        return
    headers = ("ID", "CONSUMER", "IDLE", "DELIVERIES", "TYPE")
    click.echo(table(_partition_column(target, headers), _pending_rows(target, entries)))


def _partition_column(target: Target, headers: tuple[str, ...]) -> tuple[str, ...]:
    return headers if target.partitions is None else ("PARTITION", *headers)


def _pending_rows(target: Target, entries: tuple[PendingEntry, ...]) -> list[tuple[Any, ...]]:
    rows = [
        (e.id, e.consumer, duration(e.idle_ms), e.deliveries, e.event_type or "(gone)")
        for e in entries
    ]
    if target.partitions is None:
        return rows
    return [(e.stream, *row) for e, row in zip(entries, rows, strict=True)]


@main.group()
def consumers() -> None:
    """Consumers of a group."""


@consumers.command()
@target_options
@click.option(
    "--idle",
    "idle_ms",
    callback=duration_option,
    required=True,
    help="Remove consumers idle longer than this (30m, 2h, 1d).",
)
def prune(idle_ms: int, **options: Any) -> None:
    """Remove consumers idle longer than --idle that hold no pending entry.

    A consumer holding entries is never removed: claim or acknowledge them first.
    """
    target = target_of(options)
    result: PruneResult = run(target, lambda ops: ops.prune_consumers(idle_ms))
    if target.as_json:
        echo_json(result)
        return
    removed = plural(len(result.removed), "consumer")
    click.echo(
        f"removed {removed}: {', '.join(result.removed)}" if result.removed else "removed none"
    )
    if result.kept:
        click.echo(f"kept (they hold pending entries): {', '.join(result.kept)}")


main.add_command(dead)
