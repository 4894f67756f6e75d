"""The retry ledger: every retry handed to arq is written down beside its stream until it is back.

arq can lose a job without a trace the bot would see: a worker with another job serializer
cannot read it, a worker gives up after ``max_tries``, a job expires before any worker runs it.
So when ``ArqRetryScheduler`` has enqueued a retry, the processor writes it into
``<stream>:retries`` (a hash: job id -> the retry) and ``<stream>:retries:due`` (a sorted set:
job id -> when to look at it next), in the stream's own Redis, before it acknowledges the
failed entry. ``redeliver_event`` puts the event back on the stream and strikes it off in one
script, leaving its job id in ``<stream>:retries:done`` for a day, so a job arq runs twice
delivers once; and the processor's claim sweep moves a retry that is overdue and no longer
held by arq to the dead-letter stream, with the reason.

Whether arq still holds a job can be asked only when arq uses the stream's Redis; otherwise a
lost retry is found once the job's ``expires`` has passed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from codex_bot.redis.codec import text
from codex_bot.redis.constants import (
    ATTEMPT_FIELD,
    DEAD_AT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_HANDLER_FIELD,
    DEAD_REASON_FIELD,
    DEAD_SOURCE_ID_FIELD,
    DEAD_STREAM_FIELD,
    HANDLERS_FIELD,
    JSON_PREFIX,
)
from codex_bot.redis.letters import LUA_MAX_FIELDS, pack_letters, xadd_letters_lua

LEDGER_SUFFIX = ":retries"
"""``<stream>:retries``: job id -> the retry, as JSON."""
DUE_SUFFIX = ":retries:due"
"""``<stream>:retries:due``: job id -> when the reaper looks at it next (ms since the epoch)."""
DONE_SUFFIX = ":retries:done"
"""``<stream>:retries:done``: job id -> when it was delivered or dead-lettered (kept a day)."""
_DONE_KEPT_MS = 24 * 3600 * 1000
_PAGE = 100

RECORD_LUA = """
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""
"""KEYS: ledger, due, done. ARGV: job id, the entry as JSON, when to look at it (ms).
Writes nothing for a job that already delivered (arq ran it before it was written down)."""

_DONE = """
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[2] - ARGV[3])
"""

REDELIVER_LUA = (
    """
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
"""
    + _DONE
    + """
return id
"""
)
"""KEYS: stream, ledger, due, done. ARGV: job id, now (ms), how long done ids are kept (ms),
then the fields. Returns the new entry id, or nil when the job already delivered or its retry
was dead-lettered."""

BURY_LUA = (
    "if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end"
    + xadd_letters_lua("KEYS[1]", 4)
    + _DONE
    + """
return 1
"""
)
"""KEYS: dead stream, ledger, due, done. ARGV: job id, now (ms), how long done ids are kept
(ms), then per letter its number of fields and the field/value pairs. Writes the letters only
while the retry is still on the ledger."""


def ledger_keys(stream_name: str) -> tuple[str, str, str]:
    """``<stream>:retries``, ``...:due``, ``...:done``: they share the stream's hash tag, if any."""
    return stream_name + LEDGER_SUFFIX, stream_name + DUE_SUFFIX, stream_name + DONE_SUFFIX


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One retry handed to arq and not back on its stream yet.

    Attributes:
        job_id: The arq job.
        fields: The retry's fields, ``codex.`` metadata included, ready for XADD.
        source_id: The entry whose handlers failed.
        due_ms: When the retry should be back.
        give_up_ms: After this, arq cannot run the job any more (it expired).
        check_every_ms: How long after it is due, and then how often, the reaper looks at it.
        alive_keys: arq's keys of the job while it waits or runs, when arq shares this Redis.
        result_key: arq's key of the job's result, when arq shares this Redis.
    """

    job_id: str
    fields: dict[str, str]
    source_id: str
    due_ms: int
    give_up_ms: int
    check_every_ms: int
    alive_keys: tuple[str, ...] = ()
    result_key: str = ""

    def dumps(self) -> str:
        """The JSON stored in the ledger hash."""
        return json.dumps(
            {
                "fields": self.fields,
                "source": self.source_id,
                "due": self.due_ms,
                "give_up": self.give_up_ms,
                "check": self.check_every_ms,
                "alive": list(self.alive_keys),
                "result": self.result_key,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, job_id: str, raw: str | bytes) -> LedgerEntry:
        """Read an entry back from the ledger hash."""
        data = json.loads(raw)
        return cls(
            job_id,
            dict(data["fields"]),
            str(data["source"]),
            int(data["due"]),
            int(data["give_up"]),
            int(data["check"]),
            tuple(data.get("alive") or ()),
            str(data.get("result") or ""),
        )

    def letters(self, stream_name: str, reason: str) -> list[dict[str, str]]:
        """Dead letters for the retry: one per handler it targets, as the dispatcher writes them."""
        attempt = self.fields.get(ATTEMPT_FIELD, "2").removeprefix(JSON_PREFIX)
        failed = str(max(int(attempt) - 1, 1)) if attempt.isdigit() else "1"
        base = {
            **self.fields,
            DEAD_REASON_FIELD: reason,
            DEAD_STREAM_FIELD: stream_name,
            DEAD_SOURCE_ID_FIELD: self.source_id,
            DEAD_ATTEMPTS_FIELD: failed,
            DEAD_AT_FIELD: str(now_ms()),
        }
        handlers = _handlers(self.fields.get(HANDLERS_FIELD))
        if not handlers:
            return [base]
        return [{**base, DEAD_HANDLER_FIELD: handler} for handler in handlers]


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


class RetryLedger:
    """The retry ledgers of the streams in one Redis (the streams' Redis).

    Args:
        redis: A client of the Redis the streams live in (``bytes`` or ``str`` replies).
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        self._record = redis.register_script(RECORD_LUA)
        self._redeliver = redis.register_script(REDELIVER_LUA)
        self._bury = redis.register_script(BURY_LUA)

    async def record(self, stream_name: str, entry: LedgerEntry) -> None:
        """Write a retry down; it is looked at once it is overdue.

        Its arq keys are kept only when they are in this Redis (arq uses the streams' Redis):
        only then can the reaper ask whether arq still holds the job.
        """
        if entry.alive_keys and not await self.redis.exists(entry.alive_keys[0]):
            entry = replace(entry, alive_keys=(), result_key="")
        args = [entry.job_id, entry.dumps(), entry.due_ms + entry.check_every_ms]
        await self._record(keys=list(ledger_keys(stream_name)), args=args)

    async def redeliver(
        self, stream_name: str, job_id: str, fields: Mapping[str, str]
    ) -> str | None:
        """Put the retry back on its stream and strike it off, in one script.

        Args:
            stream_name: Where the retry goes.
            job_id: The arq job that carries it ("" for a job without an id).
            fields: The retry's fields.

        Returns:
            The new entry id, or None when this job already delivered it (arq ran it twice)
            or its retry was dead-lettered as lost.
        """
        keys = [stream_name, *ledger_keys(stream_name)]
        if len(fields) <= LUA_MAX_FIELDS:
            args: list[Any] = [job_id, now_ms(), _DONE_KEPT_MS]
            for field, value in fields.items():
                args += (field, value)
            reply = await self._redeliver(keys=keys, args=args)
            return None if reply is None else text(reply)
        # too many fields for one scripted XADD: a crash between the steps may deliver twice
        if await self.redis.zscore(keys[3], job_id) is not None:
            return None
        entry_id = text(await self.redis.xadd(stream_name, dict(fields)))
        await self._struck_off(stream_name, job_id)
        return entry_id

    async def reap(self, stream_name: str, dead_stream: str) -> int:
        """Dead-letter the overdue retries of ``stream_name`` that arq no longer holds.

        A retry whose job still waits or runs in arq is looked at again later; one arq can no
        longer run is moved to ``dead_stream`` with the reason, one letter per handler it
        targets, and struck off (a late run of its job then adds nothing).

        Returns:
            How many retries were dead-lettered.
        """
        ledger, due, _ = ledger_keys(stream_name)
        buried = 0
        while True:
            now = now_ms()
            job_ids = [text(j) for j in await self.redis.zrangebyscore(due, "-inf", now, 0, _PAGE)]
            if not job_ids:
                return buried
            for job_id, raw in zip(job_ids, await self.redis.hmget(ledger, job_ids), strict=True):
                if raw is None:  # delivered between the two reads
                    await self.redis.zrem(due, job_id)
                    continue
                entry = LedgerEntry.loads(job_id, raw)
                reason, look_again = await self._verdict(entry, now)
                if reason:
                    buried += await self._bury_entry(stream_name, dead_stream, entry, reason)
                else:
                    await self.redis.zadd(due, {job_id: look_again})
            if len(job_ids) < _PAGE:
                return buried

    async def _verdict(self, entry: LedgerEntry, now: int) -> tuple[str, int]:
        """Why the retry is lost, or "" and when to look at it again."""
        job = entry.job_id
        if entry.alive_keys:
            if await self.redis.exists(*entry.alive_keys):
                return "", now + entry.check_every_ms
            if entry.result_key and await self.redis.exists(entry.result_key):
                return (
                    f"the retry job {job} ended without putting the event back: arq could not "
                    "run it or gave up on it (see the retry worker's log, its job serializer "
                    "and max_tries)",
                    0,
                )
            return f"arq dropped the retry job {job} before it ran (it expired or was deleted)", 0
        if now < entry.give_up_ms:
            return "", entry.give_up_ms
        return f"the retry job {job} did not put the event back before it expired", 0

    async def _bury_entry(
        self, stream_name: str, dead_stream: str, entry: LedgerEntry, reason: str
    ) -> int:
        letters = entry.letters(stream_name, reason)
        if len(entry.fields) <= LUA_MAX_FIELDS:
            args = [entry.job_id, now_ms(), _DONE_KEPT_MS, *pack_letters(letters)]
            keys = [dead_stream, *ledger_keys(stream_name)]
            return int(await self._bury(keys=keys, args=args))
        if not await self.redis.hexists(ledger_keys(stream_name)[0], entry.job_id):
            return 0
        for letter in letters:  # a crash before it is struck off writes the letters again later
            await self.redis.xadd(dead_stream, letter)
        await self._struck_off(stream_name, entry.job_id)
        return 1

    async def _struck_off(self, stream_name: str, job_id: str) -> None:
        ledger, due, done = ledger_keys(stream_name)
        now = now_ms()
        await self.redis.hdel(ledger, job_id)
        await self.redis.zrem(due, job_id)
        await self.redis.zadd(done, {job_id: now})
        await self.redis.zremrangebyscore(done, "-inf", now - _DONE_KEPT_MS)


def _handlers(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        value = json.loads(raw.removeprefix(JSON_PREFIX))
    except ValueError:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [name for name in value if isinstance(name, str)]
    return []
