"""``InMemoryStreamStorage``: Redis Stream consumer groups in plain Python, for unit tests.

Both storage protocols, with Redis 7's semantics (``<ms>-<seq>`` ids, a group's
last-delivered id, per-consumer pending entries with delivery counts and idle times,
XAUTOCLAIM cursors, ``ResponseError("NOGROUP ...")`` for a missing group), so a
``RedisStreamProcessor`` runs on it unchanged. As with ``RedisStreamStorage``, the reliable
reads return fields as ``bytes``; the basic reads and ``entries()`` return ``str``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from codex_bot.redis.codec import encode_event, raw_fields
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX
from codex_bot.redis.types import ClaimPage, Entry, GroupConsumer, Letters, TextEntries

_Id = tuple[int, int]


@dataclass(frozen=True, slots=True)
class PendingEntry:
    """One entry of a group's pending entries list (a row of XPENDING)."""

    entry_id: str
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(slots=True)
class _Nack:
    consumer: str
    delivered_at: float
    deliveries: int


@dataclass(slots=True)
class _Group:
    last_delivered: _Id
    pel: dict[_Id, _Nack] = field(default_factory=dict)
    consumers: set[str] = field(default_factory=set)


@dataclass(slots=True)
class _Stream:
    ids: list[_Id] = field(default_factory=list)
    fields: dict[_Id, dict[bytes, bytes]] = field(default_factory=dict)
    last_id: _Id = (0, 0)
    groups: dict[str, _Group] = field(default_factory=dict)


class InMemoryStreamStorage:
    """Streams and consumer groups in memory, with the behaviour ``RedisStreamStorage`` has.

    Field names and values may be ``str``, ``bytes`` (to try input that is not UTF-8),
    ``int`` or ``float``, as with redis-py's XADD.

    Args:
        clock: Seconds, monotonic; idle times are measured with it. Pass your own to let
            entries go stale without waiting for ``claim_min_idle_ms``.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._waiters: set[asyncio.Event] = set()

    # -- helpers for tests -------------------------------------------------------------

    def add(self, stream_name: str, fields: Mapping[Any, Any]) -> str:
        """Append an entry (XADD ``*``), creating the stream; return its id.

        Raises:
            ValueError: ``fields`` is empty.
            TypeError: a name or value is not ``str``, ``bytes``, ``int`` or ``float``.
        """
        if not fields:
            msg = "an entry needs at least one field"
            raise ValueError(msg)
        values = {_value(key): _value(value) for key, value in fields.items()}
        stream = self._streams.setdefault(stream_name, _Stream())
        last_ms, last_seq = stream.last_id
        now_ms = max(int(time.time() * 1000), last_ms)
        stream.last_id = (now_ms, last_seq + 1) if now_ms == last_ms else (now_ms, 0)
        stream.ids.append(stream.last_id)
        stream.fields[stream.last_id] = values
        self._wake()
        return _format(stream.last_id)

    def add_event(self, stream_name: str, event_type: str, data: Mapping[str, Any]) -> str:
        """Append an event encoded as ``StreamProducer.add_event`` would; return its id."""
        return self.add(stream_name, encode_event(event_type, data))

    def entries(self, stream_name: str) -> list[tuple[str, dict[str, str]]]:
        """Every entry of the stream, oldest first (XRANGE ``-`` ``+``)."""
        stream = self._streams.get(stream_name) or _Stream()
        return [(_format(i), raw_fields(stream.fields[i])) for i in stream.ids]

    def dead_letters(self, stream_name: str) -> list[tuple[str, dict[str, str]]]:
        """The entries of ``<stream_name>:dead``, the processor's default dead-letter stream."""
        return self.entries(stream_name + DEAD_LETTER_SUFFIX)

    def pending(self, stream_name: str, group_name: str) -> list[PendingEntry]:
        """The group's pending entries, oldest first (XPENDING ``-`` ``+``).

        Raises:
            redis.exceptions.ResponseError: NOGROUP, the stream or the group does not exist.
        """
        _, group = self._lookup(stream_name, group_name)
        now = self._clock()
        return [
            PendingEntry(_format(i), n.consumer, int((now - n.delivered_at) * 1000), n.deliveries)
            for i, n in sorted(group.pel.items())
        ]

    def consumers(self, stream_name: str, group_name: str) -> list[str]:
        """The names of the group's consumers, sorted (XINFO CONSUMERS).

        Raises:
            redis.exceptions.ResponseError: NOGROUP, the stream or the group does not exist.
        """
        return sorted(self._lookup(stream_name, group_name)[1].consumers)

    def delete(self, stream_name: str, *entry_ids: str) -> int:
        """Delete entries (XDEL); pending ones stay pending. Return how many existed."""
        stream = self._streams.get(stream_name) or _Stream()
        gone = [i for i in map(_parse, entry_ids) if stream.fields.pop(i, None) is not None]
        for entry_id in gone:
            stream.ids.remove(entry_id)
        return len(gone)

    def destroy_group(self, stream_name: str, group_name: str) -> bool:
        """Remove a group and its pending entries (XGROUP DESTROY); False if it was missing."""
        stream = self._streams.get(stream_name)
        existed = stream is not None and stream.groups.pop(group_name, None) is not None
        self._wake()
        return existed

    def flushall(self) -> None:
        """Forget every stream and group, as FLUSHALL or a restart without persistence does."""
        self._streams.clear()
        self._wake()

    # -- StreamStorageProtocol ---------------------------------------------------------

    async def create_group(self, stream_name: str, group_name: str) -> None:
        """Create the group at id ``0`` (MKSTREAM); do nothing if it exists."""
        await self.ensure_group(stream_name, group_name, "0")

    async def read_events(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> TextEntries:
        """Up to ``count`` entries never delivered to the group, without waiting."""
        entries = self._deliver_new(stream_name, group_name, consumer_name, count)
        return [(entry_id, raw_fields(fields)) for entry_id, fields in entries]

    async def ack_event(self, stream_name: str, group_name: str, message_id: str) -> None:
        """Acknowledge one entry."""
        await self.ack_events(stream_name, group_name, [message_id])

    async def claim_stale_events(
        self, stream_name: str, group_name: str, consumer_name: str, min_idle_time: int, count: int
    ) -> TextEntries:
        """Claim the first page of entries idle for ``min_idle_time`` ms."""
        who = GroupConsumer(stream_name, group_name, consumer_name)
        page = await self.claim_stale(who, min_idle_time, "0-0", count)
        return [(entry_id, raw_fields(fields)) for entry_id, fields in page.entries]

    # -- ReliableStreamStorageProtocol -------------------------------------------------

    async def ensure_group(self, stream_name: str, group_name: str, start_id: str) -> bool:
        """Create the group at ``start_id`` (``$``: the stream's last id); False if it exists."""
        stream = self._streams.setdefault(stream_name, _Stream())
        if group_name in stream.groups:
            return False
        start = stream.last_id if start_id == "$" else _parse(start_id)
        stream.groups[group_name] = _Group(start)
        return True

    async def group_last_delivered_id(self, stream_name: str, group_name: str) -> str | None:
        """The group's last-delivered id, or None if the stream or the group is missing."""
        stream = self._streams.get(stream_name)
        group = stream.groups.get(group_name) if stream else None
        return _format(group.last_delivered) if group else None

    async def read_new(self, who: GroupConsumer, count: int, block_ms: int) -> list[Entry]:
        """New entries (``>``); wait up to ``block_ms`` for one to be added if there are none.

        Raises:
            redis.exceptions.ResponseError: NOGROUP, also when the group is destroyed or
                the data flushed while waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_ms / 1000
        while True:
            entries = self._deliver_new(*who, count)
            remaining = deadline - loop.time()
            if entries or remaining <= 0:
                return entries
            # one event per wait, made on the running loop: a storage may outlive a test's loop
            woken = asyncio.Event()
            self._waiters.add(woken)
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await woken.wait()
            finally:
                self._waiters.discard(woken)

    async def ack_and_read_new(
        self, who: GroupConsumer, ack_ids: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        """``ack_events`` then ``read_new``, as Redis runs the pipelined pair: the ACKs are
        done before the read starts waiting."""
        await self.ack_events(who.stream, who.group, ack_ids)
        return await self.read_new(who, count, block_ms)

    async def restore_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> None:
        """Put entries that still exist back in this consumer's pending list (XCLAIM FORCE)."""
        stream, group = self._lookup(who.stream, who.group)
        group.consumers.add(who.name)
        now = self._clock()
        for entry_id in map(_parse, entry_ids):
            if entry_id in stream.fields:
                group.pel[entry_id] = _Nack(who.name, now, 1)

    async def read_own_pending(self, who: GroupConsumer, after_id: str, count: int) -> list[Entry]:
        """This consumer's pending entries after ``after_id``; each read counts as a delivery.

        An entry deleted from the stream comes back with empty fields, as in Redis.
        """
        stream, group = self._lookup(who.stream, who.group)
        group.consumers.add(who.name)
        after, now = _parse(after_id), self._clock()
        found: list[Entry] = []
        for entry_id, nack in sorted(group.pel.items()):
            if 0 < count <= len(found):
                break
            if entry_id <= after or nack.consumer != who.name:
                continue
            fields = stream.fields.get(entry_id)
            if fields is not None:
                nack.delivered_at, nack.deliveries = now, nack.deliveries + 1
            found.append((_format(entry_id), dict(fields or {})))
        return found

    async def claim_stale(
        self, who: GroupConsumer, min_idle_ms: int, cursor: str, count: int
    ) -> ClaimPage:
        """One XAUTOCLAIM page from ``cursor`` (Redis 7: deleted entries leave the PEL).

        As in Redis, a deleted entry counts against ``count`` and at most ``count * 10``
        pending entries are looked at per page.
        """
        stream, group = self._lookup(who.stream, who.group)
        group.consumers.add(who.name)
        start, now = _parse(cursor), self._clock()
        candidates = [entry_id for entry_id in sorted(group.pel) if entry_id >= start]
        claimed: list[Entry] = []
        deleted: list[str] = []
        budget, attempts, index = count, count * 10, 0
        while index < len(candidates) and budget > 0 and attempts > 0:
            entry_id, index, attempts = candidates[index], index + 1, attempts - 1
            nack, fields = group.pel[entry_id], stream.fields.get(entry_id)
            if fields is None:
                del group.pel[entry_id]
                deleted.append(_format(entry_id))
            elif (now - nack.delivered_at) * 1000 >= min_idle_ms:
                nack.consumer, nack.delivered_at = who.name, now
                nack.deliveries += 1
                claimed.append((_format(entry_id), dict(fields)))
            else:
                continue
            budget -= 1
        next_cursor = _format(candidates[index]) if index < len(candidates) else "0-0"
        return ClaimPage(next_cursor, claimed, deleted)

    async def delivery_counts(
        self, stream_name: str, group_name: str, entry_ids: Sequence[str]
    ) -> dict[str, int]:
        """How many times each pending entry was delivered; absent ids are omitted."""
        if not entry_ids:
            return {}
        pel = self._lookup(stream_name, group_name)[1].pel
        return {e: pel[_parse(e)].deliveries for e in entry_ids if _parse(e) in pel}

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge entries; return how many were pending (0 for a missing group)."""
        stream = self._streams.get(stream_name)
        group = stream.groups.get(group_name) if stream else None
        if group is None:
            return 0
        return sum(group.pel.pop(_parse(e), None) is not None for e in set(entry_ids))

    async def refresh_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> int:
        """Reset the idle time of the entries the consumer still owns (XCLAIM JUSTID)."""
        _, group = self._lookup(who.stream, who.group)
        now, refreshed = self._clock(), 0
        for entry_id in map(_parse, entry_ids):
            nack = group.pel.get(entry_id)
            if nack is not None and nack.consumer == who.name:
                nack.delivered_at = now
                refreshed += 1
        return refreshed

    async def remove_consumer(self, who: GroupConsumer) -> bool:
        """Delete the consumer if it holds no pending entry (XGROUP DELCONSUMER, checked)."""
        stream = self._streams.get(who.stream)
        group = stream.groups.get(who.group) if stream else None
        if group is None or who.name not in group.consumers:
            return False
        if any(nack.consumer == who.name for nack in group.pel.values()):
            return False
        group.consumers.discard(who.name)
        return True

    async def dead_letter(
        self, stream_name: str, group_name: str, entry_id: str, dead_stream: str, letters: Letters
    ) -> None:
        """Append ``letters`` to ``dead_stream`` and acknowledge ``entry_id`` (no await between)."""
        for letter in letters:
            self.add(dead_stream, letter)
        await self.ack_events(stream_name, group_name, [entry_id])

    # -- internals ---------------------------------------------------------------------

    def _lookup(self, stream_name: str, group_name: str) -> tuple[_Stream, _Group]:
        stream = self._streams.get(stream_name)
        group = stream.groups.get(group_name) if stream else None
        if stream is None or group is None:
            msg = f"NOGROUP No such key '{stream_name}' or consumer group '{group_name}'"
            raise ResponseError(msg)
        return stream, group

    def _deliver_new(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> list[Entry]:
        stream, group = self._lookup(stream_name, group_name)
        group.consumers.add(consumer_name)
        first = bisect.bisect_right(stream.ids, group.last_delivered)
        ids = stream.ids[first : first + count] if count > 0 else stream.ids[first:]
        now = self._clock()
        for entry_id in ids:
            group.pel[entry_id] = _Nack(consumer_name, now, 1)
        if ids:
            group.last_delivered = ids[-1]
        return [(_format(entry_id), dict(stream.fields[entry_id])) for entry_id in ids]

    def _wake(self) -> None:
        for woken in self._waiters:
            woken.set()


def _parse(entry_id: str) -> _Id:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _format(entry_id: _Id) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def _value(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value).encode()
    msg = f"stream fields take str, bytes, int or float, not {type(value).__name__}"
    raise TypeError(msg)
