"""Partition leases: a partition is read by exactly one replica at a time.

The lease of partition ``{S:p3}`` for group ``G`` is the key ``{S:p3}:lease:G``, holding the
owning consumer's name with an expiry of ``lease_ttl``; it shares the partition's hash tag, so
one script can check it and touch the stream. ``LeasedStreamStorage`` is the storage of one
partition: every read, claim, acknowledgement and dead letter checks the lease in the same
script, so a replica that lost its lease (a long pause, a network split) can neither read new
entries nor acknowledge any; it gets ``LeaseLostError`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from codex_bot.redis.codec import text
from codex_bot.redis.exceptions import LeaseLostError
from codex_bot.redis.letters import LUA_MAX_FIELDS, pack_letters, xadd_letters_lua
from codex_bot.redis.storage import RedisStreamStorage, claim_page
from codex_bot.redis.types import ClaimPage, Entry, GroupConsumer, Letters

_LOST = "LEASELOST"
_CHECK = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('LEASELOST the lease is held by another consumer, or by none')
end
"""

READ_LUA = (
    _CHECK
    + """
local acks = tonumber(ARGV[5])
if acks > 0 then
  redis.call('XACK', KEYS[2], ARGV[2], unpack(ARGV, 6, 5 + acks))
end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4],
                         'STREAMS', KEYS[2], '>')
if reply then return reply end
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return last[1][1] end
return '0-0'
"""
)
"""KEYS: lease, stream. ARGV: owner, group, consumer, count, number of ids to ACK first, the
ids. Returns the XREADGROUP reply, or (nothing new) the stream's last id to wait after."""

GUARD_LUA = _CHECK + "return redis.call(unpack(ARGV, 2))"
"""KEYS: lease, then the keys the command touches. ARGV: owner, the command and its arguments."""

DEAD_LETTER_LUA = (
    _CHECK + xadd_letters_lua("KEYS[3]", 4) + "return redis.call('XACK', KEYS[2], ARGV[2], ARGV[3])"
)
"""KEYS: lease, stream, dead stream. ARGV: owner, group, entry id, then per letter its number
of fields followed by the field/value pairs (the storage's dead-letter script, leased)."""

ACQUIRE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
"""KEYS: lease. ARGV: owner, ttl (ms). Takes a free lease, or renews one already held."""

RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(partition: str, group_name: str) -> str:
    """The lease of ``partition`` for ``group_name``: ``<partition>:lease:<group>``."""
    return f"{partition}:lease:{group_name}"


class LeasedStreamStorage(RedisStreamStorage):
    """The storage of one partition, checking ``owner``'s lease on every read and write.

    Args:
        redis: The client of the partition's Redis.
        lease: The lease key (``lease_key(partition, group)``).
        owner: This replica's consumer name, the lease's value while it holds it.
    """

    def __init__(self, redis: Any, lease: str, owner: str) -> None:
        super().__init__(redis)
        self.lease = lease
        self.owner = owner
        self._read = redis.register_script(READ_LUA)
        self._guard = redis.register_script(GUARD_LUA)
        self._leased_dead_letter = redis.register_script(DEAD_LETTER_LUA)

    async def read_new(self, who: GroupConsumer, count: int, block_ms: int) -> list[Entry]:
        """Read new entries under the lease; when there are none, wait up to ``block_ms``.

        A script cannot block, so the wait is an XREAD BLOCK after the stream's last id
        (it reads nothing for the group), and the leased read runs again when it wakes.
        """
        return await self.ack_and_read_new(who, (), count, block_ms)

    async def ack_and_read_new(
        self, who: GroupConsumer, ack_ids: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        """ACK ``ack_ids`` and read new entries in one leased script; wait when there are none."""
        stream_name, group_name, consumer_name = who
        args = [self.owner, group_name, consumer_name, count, len(ack_ids), *ack_ids]
        reply = await self._script(self._read, [self.lease, stream_name], args)
        if isinstance(reply, list):
            return _stream_entries(reply)
        if self._max_block_ms is not None:
            block_ms = min(block_ms, self._max_block_ms)
        woken = await self._raw_command(
            "XREAD", "COUNT", 1, "BLOCK", max(block_ms, 1), "STREAMS", stream_name, text(reply),
            key=stream_name,
        )  # fmt: skip
        if not woken:
            return []
        args = [self.owner, group_name, consumer_name, count, 0]
        reply = await self._script(self._read, [self.lease, stream_name], args)
        return _stream_entries(reply) if isinstance(reply, list) else []

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        """XACK under the lease."""
        if not entry_ids:
            return 0
        return int(await self._guarded([stream_name], "XACK", stream_name, group_name, *entry_ids))

    async def read_own_pending(self, who: GroupConsumer, after_id: str, count: int) -> list[Entry]:
        """This consumer's pending entries after ``after_id``, read under the lease."""
        stream_name, group_name, consumer_name = who
        reply = await self._guarded(
            [stream_name], "XREADGROUP", "GROUP", group_name, consumer_name,
            "COUNT", count, "STREAMS", stream_name, after_id,
        )  # fmt: skip
        return _stream_entries(reply) if reply else []

    async def claim_stale(
        self, who: GroupConsumer, min_idle_ms: int, cursor: str, count: int
    ) -> ClaimPage:
        """One XAUTOCLAIM page under the lease."""
        stream_name, group_name, consumer_name = who
        reply = await self._guarded(
            [stream_name], "XAUTOCLAIM", stream_name, group_name, consumer_name,
            min_idle_ms, cursor, "COUNT", count,
        )  # fmt: skip
        claimed = [
            (entry[0], _pairs(entry[1]) if len(entry) > 1 else None) if entry else (None, None)
            for entry in reply[1]
        ]
        parsed = [reply[0], claimed, *reply[2:]]
        return await claim_page(self, parsed, who, cursor)

    async def restore_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> None:
        """XCLAIM FORCE JUSTID under the lease."""
        stream_name, group_name, consumer_name = who
        if entry_ids:
            await self._guarded(
                [stream_name], "XCLAIM", stream_name, group_name, consumer_name, 0,
                *entry_ids, "FORCE", "JUSTID",
            )  # fmt: skip

    async def dead_letter(
        self, stream_name: str, group_name: str, entry_id: str, dead_stream: str, letters: Letters
    ) -> None:
        """Append the letters and ACK the entry under the lease, in one script.

        A letter beyond the script's reach (more than 3,500 fields) is written with plain
        XADDs after a lease check, and the ACK is leased.
        """
        if any(len(letter) > LUA_MAX_FIELDS for letter in letters):
            await self._guarded([stream_name], "EXISTS", stream_name)
            async with self.redis.pipeline(transaction=False) as pipe:
                for letter in letters:
                    pipe.xadd(dead_stream, dict(letter))
                await pipe.execute()
            await self.ack_events(stream_name, group_name, [entry_id])
            return
        args = [self.owner, group_name, entry_id, *pack_letters(letters)]
        await self._script(self._leased_dead_letter, [self.lease, stream_name, dead_stream], args)

    async def _guarded(self, keys: Sequence[str], *command: Any) -> Any:
        return await self._script(self._guard, [self.lease, *keys], [self.owner, *command])

    async def _script(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a script with undecoded replies; a lease check that fails raises LeaseLostError."""
        try:
            try:
                return await self._execute(
                    "EVALSHA", script.sha, len(keys), *keys, *args, NEVER_DECODE=True
                )
            except NoScriptError:
                await self.redis.script_load(script.script)
                return await self._execute(
                    "EVALSHA", script.sha, len(keys), *keys, *args, NEVER_DECODE=True
                )
        except ResponseError as exc:
            if str(exc).startswith(_LOST):
                raise LeaseLostError(str(exc).removeprefix(_LOST).strip()) from None
            raise


class Leases:
    """Takes, renews and gives back the leases of one replica.

    Args:
        redis: The client of the partitions' Redis.
        owner: This replica's consumer name.
        ttl_ms: How long a lease lasts without renewal.
    """

    def __init__(self, redis: Any, owner: str, ttl_ms: int) -> None:
        self.redis = redis
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    async def acquire(self, lease: str) -> bool:
        """Take the lease if it is free (or already ours); whether we hold it now."""
        return bool(await self._acquire(keys=[lease], args=[self.owner, self.ttl_ms]))

    async def renew(self, lease: str) -> bool:
        """Extend our lease; False when it is no longer ours."""
        return bool(await self._renew(keys=[lease], args=[self.owner, self.ttl_ms]))

    async def release(self, lease: str) -> None:
        """Give our lease back (nothing happens if it is no longer ours)."""
        await self._release(keys=[lease], args=[self.owner])


def _stream_entries(reply: Any) -> list[Entry]:
    """Entries of a script's XREADGROUP reply: ``[[stream, [[id, [f, v, ...]], ...]]]``."""
    return [
        (text(message[0]), _pairs(message[1]) if len(message) > 1 else {})
        for _, messages in reply
        for message in messages
    ]


def _pairs(flat: Any) -> dict[Any, Any]:
    """Field/value pairs from a flat list (a script's replies carry no maps); {} for nil."""
    if not flat:
        return {}
    return dict(zip(flat[::2], flat[1::2], strict=True))
