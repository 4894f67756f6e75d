"""Aliases and Protocols of codex_bot.redis: the seams a project can plug its own parts into."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from codex_bot.redis.ledger import LedgerEntry

AnyRedis: TypeAlias = "Redis | RedisCluster"
"""An asyncio client of one Redis (``Redis``, ``Sentinel.master_for``) or of a cluster."""

Payload: TypeAlias = dict[str, Any]
HandlerFunc: TypeAlias = Callable[[Payload, Any], Awaitable[None]]
"""A feature handler: ``async def handler(payload, container) -> None``."""
FilterFunc: TypeAlias = Callable[[Payload], Any]
"""``filter_func(payload)``; the handler runs only when it returns a truthy value."""
MessageCallback: TypeAlias = Callable[..., Awaitable[Any]]
"""``callback(payload)`` or ``callback(payload, stream_name=...)``, called per entry.

It returns None, or a :class:`HandlingReport` (as ``BotRedisDispatcher.process_message`` does)
whose ``dead_letters`` the processor moves to the dead-letter stream.
"""
OrderingKeyFunc: TypeAlias = Callable[[Payload], Any]
"""Returns the key whose events must run one after another, or ``None`` for no order."""
Entry: TypeAlias = tuple[str, Mapping[Any, Any]]
"""``(entry_id, fields)`` as a storage returns it; fields may be ``bytes`` or ``str``."""

TextEntries: TypeAlias = list[tuple[str, dict[str, Any]]]
"""Entries as the four basic storage methods return them: ``(entry_id, fields)``."""


class DeadLetterInfo(Protocol):
    """One failure a report asks the processor to dead-letter (``DeadLetter`` is one)."""

    @property
    def handler(self) -> str:
        """The failed handler's name."""
        ...

    @property
    def reason(self) -> str:
        """Why it is not retried."""
        ...

    @property
    def error(self) -> str:
        """``ExceptionType: message``."""
        ...

    @property
    def attempts(self) -> int:
        """The attempt that failed."""
        ...


@runtime_checkable
class HandlingReport(Protocol):
    """What a message callback may return: the failures to move to the dead-letter stream."""

    @property
    def dead_letters(self) -> Sequence[DeadLetterInfo]:
        """Failures that will not be retried."""
        ...


@runtime_checkable
class StreamStorageProtocol(Protocol):
    """The basic Redis Stream adapter: four methods, as in codex-bot 0.4.0.

    A project may implement it over any client. ``RedisStreamStorage`` is the redis-py one
    and also implements :class:`ReliableStreamStorageProtocol`; a storage that only has
    these four methods still works, through ``BasicStorageAdapter`` and with its limits.
    """

    async def create_group(self, stream_name: str, group_name: str) -> None:
        """Create the consumer group at id ``0`` with MKSTREAM; do nothing if it exists."""
        ...

    async def read_events(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> TextEntries:
        """Read up to ``count`` entries never delivered to the group (``XREADGROUP ... >``)."""
        ...

    async def ack_event(self, stream_name: str, group_name: str, message_id: str) -> None:
        """Acknowledge one entry (XACK), removing it from the group's PEL."""
        ...

    async def claim_stale_events(
        self, stream_name: str, group_name: str, consumer_name: str, min_idle_time: int, count: int
    ) -> TextEntries:
        """Claim up to ``count`` entries idle for ``min_idle_time`` ms (XAUTOCLAIM)."""
        ...


class GroupConsumer(NamedTuple):
    """Who reads: a stream, its consumer group, and one consumer (a process) in that group."""

    stream: str
    group: str
    name: str


Letters: TypeAlias = Sequence[Mapping[Any, Any]]
"""Dead letters to write: field name -> value, ``bytes`` as read or ``str`` as added."""


@dataclass(frozen=True, slots=True)
class ClaimPage:
    """One XAUTOCLAIM page: the cursor to continue from, the claimed and the deleted entries."""

    next_cursor: str
    entries: list[Entry]
    deleted_ids: list[str]


@runtime_checkable
class ReliableStreamStorageProtocol(Protocol):
    """The storage the processor works against: everything it needs to lose nothing.

    ``RedisStreamStorage`` and ``codex_bot.testing.InMemoryStreamStorage`` implement it. A
    storage that has only :class:`StreamStorageProtocol`'s methods is wrapped in
    ``codex_bot.redis.adapter.BasicStorageAdapter``, which lists what degrades: the processor
    logs so once at start.
    """

    async def ensure_group(self, stream_name: str, group_name: str, start_id: str) -> bool:
        """Create the group at ``start_id`` with MKSTREAM; return False if it already existed."""
        ...

    async def group_last_delivered_id(self, stream_name: str, group_name: str) -> str | None:
        """The group's last-delivered id (XINFO GROUPS), or None if the group is missing."""
        ...

    async def read_new(self, who: GroupConsumer, count: int, block_ms: int) -> list[Entry]:
        """``XREADGROUP ... BLOCK block_ms ... >``: wait on the server for new entries."""
        ...

    async def ack_and_read_new(
        self, who: GroupConsumer, ack_ids: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        """XACK ``ack_ids``, then ``read_new``, in one round trip (the XACK happens first)."""
        ...

    async def restore_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> None:
        """Put entries back in this consumer's pending list (XCLAIM ... FORCE JUSTID).

        Entries no longer in the stream are skipped. The processor uses it for entries whose
        handlers failed when their group vanished, so they are not skipped.
        """
        ...

    async def read_own_pending(self, who: GroupConsumer, after_id: str, count: int) -> list[Entry]:
        """This consumer's pending entries after ``after_id``; a deleted entry has no fields."""
        ...

    async def claim_stale(
        self, who: GroupConsumer, min_idle_ms: int, cursor: str, count: int
    ) -> ClaimPage:
        """One XAUTOCLAIM page from ``cursor``."""
        ...

    async def delivery_counts(
        self, stream_name: str, group_name: str, entry_ids: Sequence[str]
    ) -> dict[str, int]:
        """How many times each pending entry was delivered (XPENDING); absent ids are omitted."""
        ...

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge many entries in one XACK; return how many were pending."""
        ...

    async def dead_letter(
        self, stream_name: str, group_name: str, entry_id: str, dead_stream: str, letters: Letters
    ) -> None:
        """Append ``letters`` to ``dead_stream``, then ACK ``entry_id``: all or nothing.

        A letter's field names and values are ``bytes`` (the entry's own, as read) or ``str``
        (the ``codex.dead.*`` fields); they are written as they are.

        ``RedisStreamStorage`` runs both in one Lua script, which stops at a failing XADD
        (MULTI/EXEC would still run the XACK and lose the entry).
        """
        ...


@runtime_checkable
class ConsumerUpkeepProtocol(Protocol):
    """A storage that looks after one consumer (``RedisStreamStorage`` does).

    An entry waiting in the processor (behind its chat, or for a send slot) for longer than
    ``claim_min_idle_ms`` would otherwise be claimed and handled a second time by another
    consumer, out of order; and a consumer named after its process would stay in the group
    for good after the process stopped.
    """

    async def refresh_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> int:
        """Reset the idle time of the entries the consumer still owns; return how many."""
        ...

    async def remove_consumer(self, who: GroupConsumer) -> bool:
        """Delete the consumer from its group if it holds no pending entry, atomically.

        Returns:
            Whether it was deleted (False while it holds an entry, or if it is gone already).
        """
        ...


@runtime_checkable
class RetryLedgerProtocol(Protocol):
    """A storage that keeps the retry ledger beside its streams (``RedisStreamStorage`` does).

    See ``codex_bot.redis.ledger``: the processor writes each retry a scheduler returns
    before it acknowledges the failed entry, and reaps the lost ones on each claim sweep.
    """

    async def record_retry(self, stream_name: str, entry: LedgerEntry) -> None:
        """Write a retry handed to the scheduler into ``stream_name``'s ledger."""
        ...

    async def reap_retries(self, stream_name: str, dead_stream: str) -> int:
        """Dead-letter the overdue retries of ``stream_name`` arq no longer holds; how many."""
        ...


@runtime_checkable
class RetrySchedulerProtocol(Protocol):
    """Takes over a failed event and brings it back to its stream later (ARQ or similar).

    The payload holds JSON values (lists, numbers, booleans) and ``codex.`` retry metadata:
    encode it with ``codex_bot.redis.codec.encode_payload`` before XADD, as
    ``ArqRetryScheduler`` does, so the retry decodes as the original did.
    """

    async def schedule_retry(
        self, stream_name: str, payload: dict[str, Any], delay: float = 60
    ) -> LedgerEntry | None:
        """Schedule the event to be put back on ``stream_name`` after ``delay`` seconds.

        Args:
            stream_name: The stream the event came from and goes back to.
            payload: The event, ``type`` and ``codex.`` retry metadata included.
            delay: Seconds to wait (an int is a float too).

        Returns:
            None, or (as ``ArqRetryScheduler`` does) the retry for the processor to write into
            the retry ledger, so a retry the scheduler loses is dead-lettered.
        """
        ...
