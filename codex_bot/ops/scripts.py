"""The atomic writes of the operations API: moving a letter back, deleting an idle consumer.

Each runs on the server in one step, so an operator's command that is interrupted, run
twice, or run while the bot works never duplicates an event, loses one, or removes a
consumer that holds entries. The scripts touch only the keys they are given, so a stream
and its dead-letter stream can live on a Redis Cluster (in one hash slot, ``{bot}:events``
and ``{bot}:events:dead``).
"""

from __future__ import annotations

from collections.abc import Mapping

from redis.asyncio import Redis
from redis.exceptions import WatchError

from codex_bot.ops.errors import OpsError
from codex_bot.ops.replies import command, show
from codex_bot.redis.storage import REMOVE_CONSUMER_LUA

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
is moved with a checked MULTI/EXEC instead."""

_WATCH_TRIES = 100


class Scripts:
    """The scripts, registered once on a client.

    Args:
        redis: The client of the streams' Redis.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._replay = redis.register_script(_REPLAY_LUA)
        self._prune = redis.register_script(REMOVE_CONSUMER_LUA)

    async def move_letter(
        self, stream: str, dead_stream: str, letter_id: str, fields: Mapping[bytes, bytes]
    ) -> str | None:
        """Add ``fields`` to ``stream`` and delete the letter, both or neither.

        Returns:
            The new entry's id; None when the letter no longer exists (nothing was added).

        Raises:
            redis.exceptions.ResponseError: Redis refused the entry (the key holds another
                type, out of memory); the letter is kept.
            OpsError: a huge letter could not be moved because the stream kept changing.
        """
        values = [item for pair in fields.items() for item in pair]
        if len(values) > LUA_MAX_VALUES:
            return await self._move_in_transaction(stream, dead_stream, letter_id, values)
        entry_id = await self._replay(keys=[stream, dead_stream], args=[letter_id, *values])
        return None if entry_id is None else show(entry_id)

    async def _move_in_transaction(
        self, stream: str, dead_stream: str, letter_id: str, values: list[bytes]
    ) -> str | None:
        # MULTI/EXEC runs the XDEL even when the XADD fails, so everything that could make the
        # XADD fail is checked under WATCH first: the letter still exists, the key is a stream
        # (or absent); EXEC is refused if either key changed meanwhile, and the check repeats
        async with self.redis.pipeline(transaction=True) as pipe:
            for _ in range(_WATCH_TRIES):
                try:
                    await pipe.watch(stream, dead_stream)
                    if not await command(pipe, "XRANGE", dead_stream, letter_id, letter_id):
                        return None
                    kind = show(await command(pipe, "TYPE", stream))
                    if kind not in ("stream", "none"):
                        msg = f"key {stream!r} is not a stream (it holds a {kind})"
                        raise OpsError(msg)
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    pipe.execute_command("XADD", stream, "*", *values)
                    pipe.execute_command("XDEL", dead_stream, letter_id)
                    entry_id, _ = await pipe.execute()
                    return show(entry_id)
                except WatchError:
                    continue
        msg = f"{stream!r} kept changing; dead letter {letter_id} was not moved, try again"
        raise OpsError(msg)

    async def delete_idle_consumer(
        self, stream: str, group: str, consumer: bytes, min_idle_ms: int
    ) -> bool:
        """Delete the consumer if it holds no pending entry and is idle at least that long.

        Returns:
            True if it was deleted.
        """
        deleted = await self._prune(keys=[stream], args=[group, consumer, min_idle_ms])
        return bool(deleted)
