"""Aliases and Protocols of codex_bot.redis: the seams a project can plug its own parts into."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, runtime_checkable

Payload: TypeAlias = dict[str, Any]
HandlerFunc: TypeAlias = Callable[[Payload, Any], Awaitable[None]]
"""A feature handler: ``async def handler(payload, container) -> None``."""
FilterFunc: TypeAlias = Callable[[Payload], Any]
"""``filter_func(payload)``; the handler runs only when it returns a truthy value."""
MessageCallback: TypeAlias = Callable[..., Awaitable[Any]]
"""``callback(payload)`` or ``callback(payload, stream_name=...)``, called per entry."""
OrderingKeyFunc: TypeAlias = Callable[[Payload], Any]
"""Returns the key whose events must run one after another, or ``None`` for no order."""
Entry: TypeAlias = tuple[str, Mapping[Any, Any]]
"""``(entry_id, fields)`` as a storage returns it; fields may be ``bytes`` or ``str``."""


@runtime_checkable
class StreamStorageProtocol(Protocol):
    """Redis Stream adapter the processor reads through (the seed's four methods).

    A project may implement it over any client. ``RedisStreamStorage`` is the redis-py one
    and also implements :class:`ReliableStreamStorageProtocol`; a storage that only has
    these four methods still works, with the limits listed there.
    """

    async def create_group(self, stream_name: str, group_name: str) -> None:
        """Create the consumer group at id ``0`` with MKSTREAM; do nothing if it exists."""
        ...

    async def read_events(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Read up to ``count`` entries never delivered to the group (``XREADGROUP ... >``)."""
        ...

    async def ack_event(self, stream_name: str, group_name: str, message_id: str) -> None:
        """Acknowledge one entry (XACK), removing it from the group's PEL."""
        ...

    async def claim_stale_events(
        self,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        min_idle_time: int,
        count: int,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Claim up to ``count`` entries idle for ``min_idle_time`` ms (XAUTOCLAIM)."""
        ...


@dataclass(frozen=True, slots=True)
class ClaimPage:
    """One XAUTOCLAIM page: the cursor to continue from, the claimed and the deleted entries."""

    next_cursor: str
    entries: list[Entry]
    deleted_ids: list[str]


@runtime_checkable
class ReliableStreamStorageProtocol(Protocol):
    """What the processor needs beyond the seed's protocol to lose nothing.

    ``RedisStreamStorage`` implements it. With a storage that lacks it the processor
    falls back to the seed's behaviour and logs so once at start: reads go through
    ``read_events`` and sleep ``poll_interval`` when empty, acknowledgements go one by one,
    claims use ``claim_stale_events`` (first page only; no sweep if the storage lacks it, as
    the seed's example adapter does), ``max_deliveries`` is not enforced, a lost group is
    recreated by ``create_group`` at ``0`` (its history is handled again), and an entry
    that should be dead-lettered is left pending with an error logged.
    """

    async def ensure_group(self, stream_name: str, group_name: str, start_id: str) -> bool:
        """Create the group at ``start_id`` with MKSTREAM; return False if it already existed."""
        ...

    async def group_last_delivered_id(self, stream_name: str, group_name: str) -> str | None:
        """The group's last-delivered id (XINFO GROUPS), or None if the group is missing."""
        ...

    async def read_new(
        self, stream_name: str, group_name: str, consumer_name: str, count: int, block_ms: int
    ) -> list[Entry]:
        """``XREADGROUP ... BLOCK block_ms ... >``: wait on the server for new entries."""
        ...

    async def ack_and_read_new(
        self,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        ack_ids: Sequence[str],
        count: int,
        block_ms: int,
    ) -> list[Entry]:
        """XACK ``ack_ids``, then ``read_new``, in one round trip (the XACK happens first)."""
        ...

    async def restore_pending(
        self, stream_name: str, group_name: str, consumer_name: str, entry_ids: Sequence[str]
    ) -> None:
        """Put entries back in this consumer's pending list (XCLAIM ... FORCE JUSTID).

        Entries no longer in the stream are skipped. The processor uses it for entries whose
        handlers failed when their group vanished, so they are not skipped.
        """
        ...

    async def read_own_pending(
        self, stream_name: str, group_name: str, consumer_name: str, after_id: str, count: int
    ) -> list[Entry]:
        """This consumer's pending entries after ``after_id``; a deleted entry has no fields."""
        ...

    async def claim_stale(
        self,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        min_idle_ms: int,
        cursor: str,
        count: int,
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
        self,
        stream_name: str,
        group_name: str,
        entry_id: str,
        dead_stream: str,
        letters: Sequence[Mapping[str, str]],
    ) -> None:
        """Append ``letters`` to ``dead_stream``, then ACK ``entry_id``: all or nothing.

        ``RedisStreamStorage`` runs both in one Lua script, which stops at a failing XADD
        (MULTI/EXEC would still run the XACK and lose the entry).
        """
        ...


@runtime_checkable
class RetrySchedulerProtocol(Protocol):
    """Takes over a failed event and brings it back to its stream later (ARQ or similar).

    The payload holds JSON values (lists, numbers, booleans) and ``codex.`` retry metadata:
    encode it with ``codex_bot.redis.codec.encode_payload`` before XADD, as
    ``ArqRetryScheduler`` does, so the retry decodes as the original did.
    """

    async def schedule_retry(
        self, stream_name: str, payload: dict[str, Any], delay: int = 60
    ) -> None:
        """Schedule the event to be put back on ``stream_name`` after ``delay`` seconds.

        Args:
            stream_name: The stream the event came from and goes back to.
            payload: The event, ``type`` and ``codex.`` retry metadata included.
            delay: Seconds to wait; a float is accepted.
        """
        ...
