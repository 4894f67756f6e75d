"""What the operations API reports: frozen value objects, ready for a table or for JSON."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream's size and the ids at its ends.

    Attributes:
        name: The stream's key.
        length: Entries it holds (XLEN).
        first_id: The oldest entry's id; None when empty.
        last_id: The newest entry's id; None when empty.
    """

    name: str
    length: int
    first_id: str | None
    last_id: str | None


@dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One consumer of a group.

    Attributes:
        name: The consumer's name (the processor's ``consumer_name``).
        pending: Entries it read and has not acknowledged.
        idle_ms: Milliseconds since it last read, claimed or acknowledged (XINFO CONSUMERS).
    """

    name: str
    pending: int
    idle_ms: int


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Where one consumer group stands on its stream.

    Attributes:
        name: The group's name.
        last_delivered_id: The newest entry handed to one of its consumers.
        lag: Entries not yet delivered to any consumer. Redis 7 reports it (XINFO GROUPS);
            on Redis 6.2 the entries after ``last_delivered_id`` are counted, up to
            ``LAG_COUNT_LIMIT``. None when unknown (more than that, or Redis could not tell).
        pending: Entries delivered and not acknowledged yet.
        oldest_pending_id: The lowest pending id; None when nothing is pending.
        oldest_pending_age_ms: How long that entry has waited since a consumer last received
            it (XPENDING's idle time). A live processor refreshes the entries it holds, so
            this stays below ``claim_min_idle_ms`` while one does; it grows past that when
            their consumer is gone and no live one claims them. Not the time since the entry
            was added: a backlog being drained is not stuck.
        consumers: The group's consumers.
    """

    name: str
    last_delivered_id: str
    lag: int | None
    pending: int
    oldest_pending_id: str | None
    oldest_pending_age_ms: int | None
    consumers: tuple[ConsumerInfo, ...]


@dataclass(frozen=True, slots=True)
class ReasonCount:
    """How many dead letters give one reason."""

    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class DeadLetterStats:
    """The dead-letter stream at a glance.

    Attributes:
        stream: The dead-letter stream's key.
        count: Letters it holds.
        reasons: The most common reasons, most frequent first.
        sampled: How many letters, newest first, the reasons were counted over.
    """

    stream: str
    count: int
    reasons: tuple[ReasonCount, ...]
    sampled: int


@dataclass(frozen=True, slots=True)
class RetryQueueStats:
    """Retries of the stream waiting in arq's queue (job ids ``codex:retry:<stream>:...``).

    Attributes:
        queue: The arq queue's key (a sorted set scored by due time).
        waiting: Retry jobs of this stream in it.
        next_due_ms: When the earliest is due, ms since the epoch; None when none waits.
    """

    queue: str
    waiting: int
    next_due_ms: int | None


@dataclass(frozen=True, slots=True)
class StreamStats:
    """Everything ``codex-bot stats`` shows for one stream.

    Attributes:
        stream: The stream itself.
        groups: Its consumer groups (or the one asked for).
        dead_letters: Its dead-letter stream.
        retries: Its retries in arq's queue; None when not asked for.
        server_time_ms: Redis's clock when the stats were taken; ages are relative to it.
    """

    stream: StreamInfo
    groups: tuple[GroupStats, ...]
    dead_letters: DeadLetterStats
    retries: RetryQueueStats | None
    server_time_ms: int


@dataclass(frozen=True, slots=True)
class PartitionedStats:
    """Everything ``codex-bot --partitions N stats`` shows: each partition, and all together."""

    stream: str
    """The partitioned stream's name (``bot_events``; its partitions are ``{bot_events:p0}``
    ...)."""
    partitions: tuple[StreamStats, ...]
    """Each partition's stats, partition 0 first. A partition nothing was written to yet has
    length 0, no group and no dead letters."""
    total: StreamStats
    """The partitions as one stream: lengths, lags, pending entries, dead letters and retries
    summed (a lag is unknown if one partition's is), the oldest pending entry and the ids at
    the ends over all partitions, consumers merged by name (their pending entries summed, the
    shortest idle time), dead-letter reasons counted over every partition's sample."""


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """An entry a consumer read and has not acknowledged.

    Attributes:
        id: The entry id.
        consumer: Who holds it.
        idle_ms: Milliseconds since it was last delivered.
        deliveries: How often it was delivered.
        event_type: Its ``type``; None when the entry is gone from the stream (deleted or
            trimmed while pending) or has no type.
        stream: The stream it is pending in (with partitions: the partition's stream).
    """

    id: str
    consumer: str
    idle_ms: int
    deliveries: int
    event_type: str | None
    stream: str


@dataclass(frozen=True, slots=True)
class DeadLetterEntry:
    """One letter of a dead-letter stream.

    Attributes:
        id: The letter's id in the dead-letter stream.
        dead_stream: The dead-letter stream.
        source_stream: The stream it came from and goes back to on replay.
        fields: Every field, raw bytes in stream order: the original entry's, then
            the ``codex.dead.*`` ones.
        event_type: The original ``type``; None when it had none.
        reason: ``codex.dead.reason``.
        handler: ``codex.dead.handler`` (the handler that failed); None when the processor
            parked the entry itself.
        error: ``codex.dead.error``; None when absent.
        source_id: ``codex.dead.source_id``, the id of the entry that failed.
        attempts: ``codex.dead.attempts``; None when absent or not a number.
        at_ms: ``codex.dead.at``, else the time in the letter's id (ms since the epoch).
        origin_id: ``codex.origin_id`` of a retried event; None for a first delivery.
    """

    id: str
    dead_stream: str
    source_stream: str
    fields: tuple[tuple[bytes, bytes], ...]
    event_type: str | None
    reason: str
    handler: str | None
    error: str | None
    source_id: str | None
    attempts: int | None
    at_ms: int
    origin_id: str | None


@dataclass(frozen=True, slots=True)
class ReplayedLetter:
    """One dead letter put back on its stream.

    Attributes:
        dead_id: The letter's id in the dead-letter stream (now deleted).
        stream: The stream it went back to.
        entry_id: The new entry's id; None when the letter was already gone (replayed or
            purged by someone else meanwhile), so nothing was added.
        event_type: The event's ``type``.
        handler: The one handler the new entry targets; None for every matching handler.
    """

    dead_id: str
    stream: str
    entry_id: str | None
    event_type: str | None
    handler: str | None


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """What a replay did.

    Attributes:
        replayed: The letters moved back, in the order they were moved.
        skipped: Ids of letters that were gone by the time their turn came.
    """

    replayed: tuple[ReplayedLetter, ...]
    skipped: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What pruning idle consumers did.

    Attributes:
        removed: Consumers deleted from the group.
        kept: Consumers idle long enough but kept: they hold pending entries (or became
            active again before the delete).
    """

    removed: tuple[str, ...]
    kept: tuple[str, ...]
