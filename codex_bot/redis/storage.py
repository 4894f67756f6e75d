"""``RedisStreamStorage``: the redis-py (asyncio) implementation of the storage protocols."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from codex_bot.redis.cluster import is_cluster, route
from codex_bot.redis.codec import entry_id_key, text
from codex_bot.redis.ledger import LedgerEntry, RetryLedger
from codex_bot.redis.letters import LUA_MAX_FIELDS, pack_letters, xadd_letters_lua
from codex_bot.redis.types import ClaimPage, Entry, GroupConsumer, Letters, TextEntries

_BLOCK_MARGIN = 0.8
"""Share of the client's socket_timeout a blocking read may use before redis-py gives up."""

_RAW: dict[str, Any] = {NEVER_DECODE: True}
"""Read entries undecoded: with ``decode_responses=True`` one entry that is not UTF-8 would
otherwise fail the whole reply, and stay pending forever as a poison pill."""

_REFRESH_LUA = """
local refreshed = 0
for i = 3, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    refreshed = refreshed + 1
  end
end
return refreshed
"""
"""KEYS: stream. ARGV: group, consumer, entry ids. Resets the idle time of the ids the consumer
still owns (XCLAIM JUSTID counts no delivery); an id another consumer claimed is left alone."""

REMOVE_CONSUMER_LUA = """
local consumers = redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
for _, fields in ipairs(consumers) do
  local info = {}
  for i = 1, #fields, 2 do
    info[fields[i]] = fields[i + 1]
  end
  if info['name'] == ARGV[2] then
    if tonumber(info['pending']) > 0 then
      return 0
    end
    if tonumber(info['idle']) < tonumber(ARGV[3]) then
      return 0
    end
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
    return 1
  end
end
return 0
"""
"""KEYS: stream. ARGV: group, consumer, minimum idle ms. Deletes the consumer only when, at
that moment, it holds no pending entry (DELCONSUMER would drop them with it) and has been
idle that long; 1 if deleted, 0 if kept or not in the group."""

_PENDING_PAGE = 100
_DEAD_LETTER_LUA = xadd_letters_lua("KEYS[2]", 3) + (
    "return redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])"
)
"""KEYS: stream, dead stream. ARGV: group, entry id, then per letter its number of
fields followed by the field/value pairs."""


class RedisStreamStorage:
    """Consumer-group I/O over ``redis.asyncio.Redis``, with or without ``decode_responses``.

    Implements ``StreamStorageProtocol`` (the four basic methods) and
    ``ReliableStreamStorageProtocol`` (blocking reads, cursor claims, batched ACKs,
    atomic dead letters) that ``RedisStreamProcessor`` uses when present.

    The methods of ``ReliableStreamStorageProtocol`` that return entries give their
    fields as ``bytes`` whatever the client's ``decode_responses``, so that an entry
    that is not valid UTF-8 is dead-lettered rather than failing the whole read;
    ``codex_bot.redis.codec.decode_fields`` turns them into a payload. Entry ids are ``str``.

    Args:
        redis: An asyncio client: ``Redis`` (also from ``Sentinel.master_for``) or
            ``RedisCluster`` (then reads go straight to the stream's node; see
            ``codex_bot.redis.cluster``). A blocking read never waits longer than 80% of its
            ``socket_timeout``, so a quiet stream does not turn into a client timeout.
    """

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self.redis = redis
        self._cluster = is_cluster(redis)
        timeout = redis.get_connection_kwargs().get("socket_timeout")
        self._max_block_ms = int(timeout * 1000 * _BLOCK_MARGIN) if timeout else None
        # redis-py types register_script for Redis only; RedisCluster has it too
        scripts: Any = redis
        self._dead_letter_script = scripts.register_script(_DEAD_LETTER_LUA)
        self._ledger = RetryLedger(redis)
        self._refresh_script = scripts.register_script(_REFRESH_LUA)
        self._remove_consumer_script = scripts.register_script(REMOVE_CONSUMER_LUA)
        # redis-py leaves execute_command untyped
        self._execute: Callable[..., Awaitable[Any]] = redis.execute_command

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **kwargs: Any) -> RedisStreamStorage:
        """Build a storage over ``Redis.from_url(url, **kwargs)`` (``RedisCluster`` with
        ``cluster=True``)."""
        if cluster:
            return cls(RedisCluster.from_url(url, **kwargs))
        return cls(Redis.from_url(url, **kwargs))

    async def _raw_command(self, *args: Any, key: str | None = None) -> Any:
        """A command with undecoded replies; on a cluster, sent straight to ``key``'s node."""
        if self._cluster and key is not None:
            return await self._execute(*args, **await route(self.redis, key), **_RAW)
        return await self._execute(*args, **_RAW)

    # -- the basic protocol ------------------------------------------------------------

    async def create_group(self, stream_name: str, group_name: str) -> None:
        """Create the group at id ``0`` with MKSTREAM, so earlier entries are handled too."""
        await self.ensure_group(stream_name, group_name, "0")

    async def read_events(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> TextEntries:
        """Read up to ``count`` new entries without blocking."""
        reply = await self.redis.xreadgroup(group_name, consumer_name, {stream_name: ">"}, count)
        return _entries(reply)

    async def ack_event(self, stream_name: str, group_name: str, message_id: str) -> None:
        """Acknowledge one entry."""
        await self.redis.xack(stream_name, group_name, message_id)

    async def claim_stale_events(
        self, stream_name: str, group_name: str, consumer_name: str, min_idle_time: int, count: int
    ) -> TextEntries:
        """Claim the first page of entries idle for ``min_idle_time`` ms."""
        reply = await self.redis.xautoclaim(
            stream_name, group_name, consumer_name, min_idle_time, "0-0", count
        )
        return [(text(entry_id), fields) for entry_id, fields in reply[1] if entry_id]

    # -- what the processor needs to lose nothing ----------------------------------------

    async def ensure_group(self, stream_name: str, group_name: str, start_id: str) -> bool:
        """Create the group at ``start_id``; False when it already exists (BUSYGROUP)."""
        try:
            await self.redis.xgroup_create(stream_name, group_name, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def group_last_delivered_id(self, stream_name: str, group_name: str) -> str | None:
        """The group's last-delivered id, or None if the stream or the group is missing."""
        try:
            groups = await self.redis.xinfo_groups(stream_name)
        except ResponseError as exc:
            if "no such key" in str(exc):
                return None
            raise
        for group in groups:
            if text(group["name"]) == group_name:
                return text(group["last-delivered-id"])
        return None

    async def read_new(self, who: GroupConsumer, count: int, block_ms: int) -> list[Entry]:
        """Wait on the server up to ``block_ms`` (never 0: that means forever) for new entries."""
        args = self._blocking_read(who, count, block_ms)
        return _entries(await self._raw_command(*args, key=who.stream))

    async def ack_and_read_new(
        self, who: GroupConsumer, ack_ids: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        """XACK the finished entries and read new ones in one pipelined round trip.

        On a cluster the two go out side by side on two connections (a pipelined XREADGROUP
        would cost the cluster client a ``COMMAND GETKEYS`` first).
        """
        stream_name, group_name, _ = who
        args = self._blocking_read(who, count, block_ms)
        if self._cluster:
            _, reply = await asyncio.gather(
                self.redis.xack(stream_name, group_name, *ack_ids),
                self._raw_command(*args, key=stream_name),
            )
            return _entries(reply)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(stream_name, group_name, *ack_ids)
            pipe.execute_command(*args, **_RAW)
            _, reply = await pipe.execute()
        return _entries(reply)

    def _blocking_read(self, who: GroupConsumer, count: int, block_ms: int) -> tuple[Any, ...]:
        """XREADGROUP arguments for new entries, blocking at most 80% of ``socket_timeout``."""
        if self._max_block_ms is not None:
            block_ms = min(block_ms, self._max_block_ms)
        return ("XREADGROUP", "GROUP", who.group, who.name, "COUNT", count,
                "BLOCK", max(block_ms, 1), "STREAMS", who.stream, ">")  # fmt: skip

    async def restore_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> None:
        """XCLAIM the ids with FORCE (and JUSTID: no delivery is counted)."""
        stream_name, group_name, consumer_name = who
        if entry_ids:
            await self.redis.xclaim(
                stream_name, group_name, consumer_name, 0, list(entry_ids), force=True, justid=True
            )

    async def read_own_pending(self, who: GroupConsumer, after_id: str, count: int) -> list[Entry]:
        """This consumer's pending entries after ``after_id`` (history read, no block).

        An entry deleted from the stream while pending comes back with no fields.
        """
        stream_name, group_name, consumer_name = who
        reply = await self._raw_command(
            "XREADGROUP", "GROUP", group_name, consumer_name, "COUNT", count,
            "STREAMS", stream_name, after_id, key=stream_name,
        )  # fmt: skip
        return _entries(reply)

    async def claim_stale(
        self, who: GroupConsumer, min_idle_ms: int, cursor: str, count: int
    ) -> ClaimPage:
        """One XAUTOCLAIM page, naming the entries deleted while pending on every version.

        Redis >= 7 lists them in the reply and drops them from the PEL. Redis 6.2 answers a
        nil in place of each, claims it and keeps it pending; their ids are then found with
        XPENDING between the neighbouring entries of the reply, and they stay pending until
        the caller ACKs them (``dead_letter`` does).
        """
        stream_name, group_name, consumer_name = who
        reply = await self._raw_command(
            "XAUTOCLAIM", stream_name, group_name, consumer_name, min_idle_ms, cursor,
            "COUNT", count, key=stream_name,
        )  # fmt: skip
        return await claim_page(self, reply, who, cursor)

    async def _deleted_in(self, who: GroupConsumer, gaps: Sequence[tuple[str, str]]) -> list[str]:
        """Ids of this consumer's pending entries in the id ranges that the stream lacks.

        In a gap of a Redis 6.2 XAUTOCLAIM reply this consumer's pending entries are the
        deleted ones just claimed, and its own entries XAUTOCLAIM skipped as not idle
        enough, which still exist.
        """
        stream_name, group_name, consumer_name = who
        candidates: list[str] = []
        for first, high in gaps:
            low = first
            while True:
                rows = await self.redis.xpending_range(
                    stream_name, group_name, low, high, _PENDING_PAGE, consumer_name
                )
                candidates += [text(row["message_id"]) for row in rows]
                if len(rows) < _PENDING_PAGE:
                    break
                low = "(" + candidates[-1]
        if not candidates:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in candidates:
                pipe.xrange(stream_name, entry_id, entry_id, count=1)
            found = await pipe.execute()
        return [entry_id for entry_id, hit in zip(candidates, found, strict=True) if not hit]

    async def delivery_counts(
        self, stream_name: str, group_name: str, entry_ids: Sequence[str]
    ) -> dict[str, int]:
        """Delivery counts of pending entries, read with XPENDING over their id range.

        Other consumers' entries may sit between them in the PEL, so the range is paged
        until every id is found or the range ends.
        """
        if not entry_ids:
            return {}
        wanted = set(entry_ids)
        counts: dict[str, int] = {}
        low = min(entry_ids, key=entry_id_key)
        high = max(entry_ids, key=entry_id_key)
        page = max(len(wanted) * 2, _PENDING_PAGE)
        while True:
            rows = await self.redis.xpending_range(stream_name, group_name, low, high, page)
            for row in rows:
                entry_id = text(row["message_id"])
                if entry_id in wanted:
                    counts[entry_id] = int(row["times_delivered"])
            if len(rows) < page or len(counts) == len(wanted):
                return counts
            low = "(" + text(rows[-1]["message_id"])

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge many entries in one XACK."""
        if not entry_ids:
            return 0
        return int(await self.redis.xack(stream_name, group_name, *entry_ids))

    async def refresh_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> int:
        """Reset the idle time of entries this consumer holds, so no one claims them.

        An entry another consumer has claimed meanwhile is left with it.

        Returns:
            How many entries were refreshed.
        """
        stream_name, group_name, consumer_name = who
        if not entry_ids:
            return 0
        args = [group_name, consumer_name, *entry_ids]
        return int(await self._refresh_script(keys=[stream_name], args=args))

    async def remove_consumer(self, who: GroupConsumer) -> bool:
        """Delete the consumer from its group if it holds no pending entry (one script).

        Returns:
            Whether it was deleted; False while it holds an entry or when it was gone.
        """
        args = [who.group, who.name, 0]
        return bool(await self._remove_consumer_script(keys=[who.stream], args=args))

    async def record_retry(self, stream_name: str, entry: LedgerEntry) -> None:
        """Write a retry handed to arq into ``stream_name``'s ledger (see ``ledger.py``)."""
        await self._ledger.record(stream_name, entry)

    async def reap_retries(self, stream_name: str, dead_stream: str) -> int:
        """Dead-letter the overdue retries of ``stream_name`` that arq no longer holds.

        See ``codex_bot.redis.ledger``; the processor's claim sweep calls this.

        Returns:
            How many retries were moved to ``dead_stream``.
        """
        return await self._ledger.reap(stream_name, dead_stream)

    async def dead_letter(
        self, stream_name: str, group_name: str, entry_id: str, dead_stream: str, letters: Letters
    ) -> None:
        """Append the letters to ``dead_stream``, then ACK the entry, in one Lua script.

        Not MULTI/EXEC: a transaction runs its XACK even when an XADD in it fails (a
        wrong-typed dead-letter key), and the entry would be lost. The script stops at the
        first failing XADD, so the entry stays pending and comes back.

        Lua passes at most about 8,000 values to one command, so a letter with more than
        3,500 fields is written by plain XADDs first and the XACK follows only when all of
        them succeeded: never a loss, but a crash between the two writes the letter again
        when the entry comes back.

        Raises:
            redis.exceptions.ResponseError: a letter could not be written; nothing was ACKed.
        """
        if any(len(letter) > LUA_MAX_FIELDS for letter in letters):
            await self._dead_letter_in_steps(
                stream_name, group_name, entry_id, dead_stream, letters
            )
            return
        args = [group_name, entry_id, *pack_letters(letters)]
        await self._dead_letter_script(keys=[stream_name, dead_stream], args=args)

    async def _dead_letter_in_steps(
        self,
        stream_name: str,
        group_name: str,
        entry_id: str,
        dead_stream: str,
        letters: Sequence[Mapping[Any, Any]],
    ) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for letter in letters:
                pipe.xadd(dead_stream, dict(letter))
            await pipe.execute()  # raises if any XADD failed: then nothing is ACKed
        await self.redis.xack(stream_name, group_name, entry_id)


def _gaps(ids: Sequence[str | None], cursor: str, next_cursor: str) -> list[tuple[str, str]]:
    """XPENDING ranges holding the nils (``None``) of a Redis 6.2 XAUTOCLAIM reply.

    Each run of nils lies after the entry before it (or from ``cursor`` on) and before the
    entry after it (or before ``next_cursor``, or up to the end when the scan finished).
    """
    gaps: list[tuple[str, str]] = []
    low = cursor
    in_gap = False
    for entry_id in ids:
        if entry_id is None:
            in_gap = True
            continue
        if in_gap:
            gaps.append((low, "(" + entry_id))
            in_gap = False
        low = "(" + entry_id
    if in_gap:
        gaps.append((low, "+" if next_cursor in ("0-0", "0") else "(" + next_cursor))
    return gaps


async def claim_page(
    storage: RedisStreamStorage, reply: Any, who: GroupConsumer, cursor: str
) -> ClaimPage:
    """A ``ClaimPage`` from an XAUTOCLAIM reply ``[cursor, [(id, fields), ...], deleted?]``.

    Redis >= 7 names the entries deleted while pending in a third element. Redis 6.2 answers
    a nil in place of each; their ids are then found with XPENDING (``_deleted_in``).
    """
    next_cursor = text(reply[0])
    entries = [(text(entry_id), fields) for entry_id, fields in reply[1] if entry_id]
    if len(reply) > 2:
        deleted = [text(entry_id) for entry_id in reply[2]]
    elif len(entries) < len(reply[1]):
        ids = [text(entry_id) if entry_id else None for entry_id, _ in reply[1]]
        gaps = _gaps(ids, cursor, next_cursor)
        deleted = await storage._deleted_in(who, gaps)
    else:
        deleted = []
    return ClaimPage(next_cursor, entries, deleted)


def _entries(reply: Any) -> list[Any]:
    if not reply:
        return []
    # RESP3: {stream: [entries]}; RESP2: [[stream, entries]]
    if isinstance(reply, dict):
        batches = [messages for value in reply.values() for messages in value]
    else:
        batches = [messages for _, messages in reply]
    # the hot path of every entry read: text() inlined
    return [
        (entry_id.decode() if type(entry_id) is bytes else entry_id, fields)
        for messages in batches
        for entry_id, fields in messages
    ]
