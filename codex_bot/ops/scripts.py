"""The atomic writes of the operations API: moving a letter back, deleting an idle consumer.

Each runs on the server in one step, so an operator's command that is interrupted, run
twice, or run while the bot works never duplicates an event, loses one, or removes a
consumer that holds entries. The scripts touch only the keys they are given, so a stream
and its dead-letter stream can live on a Redis Cluster (in one hash slot, ``{bot}:events``
and ``{bot}:events:dead``); a letter too large for Lua is moved in three steps that are
just as safe (see ``codex_bot.ops.moves``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codex_bot.ops.errors import OpsError
from codex_bot.ops.moves import RESERVATIONS_SUFFIX, LargeLetterMover
from codex_bot.ops.replies import show
from codex_bot.redis.cluster import SlotMismatchError, check_same_slot
from codex_bot.redis.storage import REMOVE_CONSUMER_LUA
from codex_bot.redis.types import AnyRedis

_REPLAY_LUA = """
if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) == 0 then
  return false
end
local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('XDEL', KEYS[2], ARGV[1])
return entry_id
"""
"""KEYS: source stream, dead-letter stream. ARGV: letter id, then the new entry's field/value
pairs. The letter is read first: one that is gone (moved by an earlier, interrupted run)
adds nothing. A failing XADD raises before anything was written."""

LUA_MAX_VALUES = 7000
"""Lua's ``unpack`` fails above ~8000 values; a letter with more fields than half this many
is moved by ``LargeLetterMover`` (reserve an id, add, finish) instead."""


class Scripts:
    """The scripts, registered once on a client.

    Args:
        redis: The client of the streams' Redis, or of a cluster.
    """

    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        scripts: Any = redis  # redis-py types register_script for Redis only
        self._replay = scripts.register_script(_REPLAY_LUA)
        self._prune = scripts.register_script(REMOVE_CONSUMER_LUA)
        self._large = LargeLetterMover(redis)

    async def move_letter(
        self, stream: str, dead_stream: str, letter_id: str, fields: Mapping[bytes, bytes]
    ) -> str | None:
        """Add ``fields`` to ``stream`` and delete the letter, both or neither.

        Returns:
            The new entry's id; None when the letter no longer exists (nothing was added).

        Raises:
            redis.exceptions.ResponseError: Redis refused the entry (the key holds another
                type, out of memory); the letter is kept.
            OpsError: on a cluster, the stream and the dead-letter stream are in different
                slots; a huge letter could not be moved (see ``LargeLetterMover.move``).
        """
        values = [item for pair in fields.items() for item in pair]
        if len(values) > LUA_MAX_VALUES:
            reservations = dead_stream + RESERVATIONS_SUFFIX
            _same_slot(self.redis, dead_stream, stream, reservations)
            return await self._large.move(stream, dead_stream, letter_id, values)
        _same_slot(self.redis, dead_stream, stream)
        entry_id = await self._replay(keys=[stream, dead_stream], args=[letter_id, *values])
        return None if entry_id is None else show(entry_id)

    async def delete_idle_consumer(
        self, stream: str, group: str, consumer: bytes, min_idle_ms: int
    ) -> bool:
        """Delete the consumer if it holds no pending entry and is idle at least that long.

        Returns:
            True if it was deleted.
        """
        deleted = await self._prune(keys=[stream], args=[group, consumer, min_idle_ms])
        return bool(deleted)


def _same_slot(redis: AnyRedis, dead_stream: str, *keys: str) -> None:
    try:
        check_same_slot(redis, dead_stream, *keys)
    except SlotMismatchError as exc:
        msg = f"cannot move letters of {dead_stream!r}: {exc}"
        raise OpsError(msg) from None
