"""Moving a dead letter too large for one Lua script back to its stream: reserve, add, finish.

Lua's ``unpack`` takes at most about 8000 values, so a letter with more fields than that
cannot be added by the script that moves the others, and redis-py's cluster client has no
MULTI/EXEC. Such a letter is moved in three steps, each of which an interrupted run (or a
second run at the same time) can repeat without adding the event twice or losing it:

1. **reserve** (a script): if the letter still exists, fix the id its new entry will have,
   above the stream's last id, and note it in ``<dead stream>:replaying`` (letter id ->
   entry id). A reservation noted earlier is kept while its id is still free.
2. **add**: XADD with that explicit id. Redis refuses an id that is not above the stream's
   last one, so however many runs add the same letter (or an interrupted run's XADD is
   still on its way), one XADD at most succeeds.
3. **finish** (a script): delete the letter and its reservation.

A reserve that finds the reserved entry in the stream (it carries the letter's id in
``codex.replayed_from``) finishes the move instead. One that finds the reserved id
overtaken by other entries (new events arrived first) reserves a new one; the XADD with the
old id can no longer succeed. The one way to add an event twice: a run stopped between add
and finish, and the stream trimmed (MAXLEN, MINID) or deleted its entry before the next run;
then the entry cannot be told from one never added, and is added again (at-least-once:
handlers tolerate a second delivery) rather than lost. Every key is the stream's or its
dead-letter stream's, so on a cluster the three share their slot when the stream has a hash
tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from codex_bot.ops.errors import OpsError
from codex_bot.ops.replies import command, show
from codex_bot.redis.constants import REPLAYED_FROM_FIELD
from codex_bot.redis.types import AnyRedis

RESERVATIONS_SUFFIX = ":replaying"
"""``<dead stream>:replaying``: the entry id reserved for each letter being moved."""

_RESERVE_LUA = """
local letter, lead, mark = ARGV[1], tonumber(ARGV[2]), ARGV[3]
if #redis.call('XRANGE', KEYS[2], letter, letter) == 0 then
  redis.call('HDEL', KEYS[3], letter)
  return {'gone'}
end
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'stream' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' holds a ' .. kind .. ', not a stream')
end
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return {tonumber(ms), tonumber(seq)}
end
local function above(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end
local last = {0, 0}
if kind == 'stream' then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last = split(info[i + 1])
    end
  end
end
local held = redis.call('HGET', KEYS[3], letter)
if held then
  local found = redis.call('XRANGE', KEYS[1], held, held)
  if #found > 0 then
    local fields = found[1][2]
    for i = #fields - 1, 1, -2 do
      if fields[i] == mark and fields[i + 1] == letter then
        redis.call('XDEL', KEYS[2], letter)
        redis.call('HDEL', KEYS[3], letter)
        return {'added', held}
      end
    end
  elseif above(split(held), last) then
    return {'reserved', held}
  end
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + lead
local id
if ms > last[1] then
  id = string.format('%.0f-0', ms)
else
  id = string.format('%.0f-%.0f', last[1], last[2] + 1)
end
redis.call('HSET', KEYS[3], letter, id)
return {'reserved', id}
"""
"""KEYS: stream, dead-letter stream, reservations. ARGV: letter id, lead ms, the
``codex.replayed_from`` field name. Returns ``{state, entry id}``: ``gone`` (the letter is
not there: nothing to do), ``added`` (an earlier run added it; now finished) or ``reserved``
(add it with this id). A new id is ``lead`` ms ahead of the server's clock, or just above
the stream's last id."""

_FINISH_LUA = """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('XDEL', KEYS[1], ARGV[1])
"""
"""KEYS: dead-letter stream, reservations. ARGV: letter id. Deletes both; 1 if the letter was
still there."""

_TRIES = 12
_LEAD_MS = 10
"""After an XADD was overtaken by new events, the next id is reserved this far ahead of the
server's clock, doubling with each try (10 ms ... about 10 s): a busy stream cannot keep a
large letter out, and a quiet one gets an id of the moment."""


@dataclass(frozen=True, slots=True)
class Reservation:
    """What ``reserve`` found: ``state`` (gone, added, reserved) and the entry id."""

    state: str
    entry_id: str | None


class LargeLetterMover:
    """Moves letters too large for Lua, in the three steps the module describes.

    Args:
        redis: The client of the streams' Redis (or cluster).
    """

    def __init__(self, redis: AnyRedis) -> None:
        self.redis = redis
        scripts: Any = redis  # redis-py types register_script for Redis only
        self._reserve = scripts.register_script(_RESERVE_LUA)
        self._finish = scripts.register_script(_FINISH_LUA)

    async def move(
        self, stream: str, dead_stream: str, letter_id: str, values: Sequence[bytes]
    ) -> str | None:
        """Add the letter's replay (``values``: field, value, ...) and delete the letter.

        Returns:
            The new entry's id; None when the letter was gone, or another run moved it.

        Raises:
            redis.exceptions.ResponseError: the stream's key holds another type, or Redis
                refused the entry (out of memory); the letter is kept.
            OpsError: the stream kept overtaking the reserved id; the letter is kept.
        """
        overtaken = False
        for attempt in range(_TRIES):
            lead = 0 if attempt == 0 else _LEAD_MS * 2 ** (attempt - 1)
            found = await self.reserve(stream, dead_stream, letter_id, lead_ms=lead)
            if found.state == "gone":
                return None
            if found.state == "added":
                return None if overtaken else found.entry_id
            assert found.entry_id is not None
            if await self.add(stream, found.entry_id, values):
                await self.finish(dead_stream, letter_id)
                return found.entry_id
            overtaken = True
        msg = f"{stream!r} kept changing; dead letter {letter_id} was not moved, try again"
        raise OpsError(msg)

    async def reserve(
        self, stream: str, dead_stream: str, letter_id: str, *, lead_ms: int = 0
    ) -> Reservation:
        """Step 1: the id the letter's entry gets, unless it is gone or already added."""
        reservations = dead_stream + RESERVATIONS_SUFFIX
        reply = await self._reserve(
            keys=[stream, dead_stream, reservations],
            args=[letter_id, lead_ms, REPLAYED_FROM_FIELD],
        )
        state, *rest = (show(item) for item in reply)
        return Reservation(state, rest[0] if rest else None)

    async def add(self, stream: str, entry_id: str, values: Sequence[bytes]) -> bool:
        """Step 2: XADD with the reserved id; False when newer entries took its place."""
        try:
            await command(self.redis, "XADD", stream, entry_id, *values, key=stream)
        except ResponseError as exc:
            if "equal or smaller" in str(exc):
                return False
            raise
        return True

    async def finish(self, dead_stream: str, letter_id: str) -> bool:
        """Step 3: delete the letter and its reservation; True if the letter was there."""
        reservations = dead_stream + RESERVATIONS_SUFFIX
        deleted = await self._finish(keys=[dead_stream, reservations], args=[letter_id])
        return bool(deleted)
