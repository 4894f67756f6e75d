"""Dead-letter operations: list, replay, purge.

Letters are read page by page, oldest first, so a dead-letter stream of any size is
handled in bounded memory; each replay or delete is its own atomic step, so a run that is
interrupted and started again picks up where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from redis.asyncio import Redis

from codex_bot.ops.letters import DeadLetterFilter, parse_letter, replayed_fields
from codex_bot.ops.models import DeadLetterEntry, ReplayedLetter, ReplayResult
from codex_bot.ops.replies import command, entries, next_id
from codex_bot.ops.scripts import Scripts

_PAGE = 100
_DELETE_BATCH = 500

ReplayCallback = Callable[[ReplayedLetter], None]
"""Called after each letter of a replay, e.g. to advance a progress bar."""


class DeadLetters:
    """The letters of one dead-letter stream.

    Args:
        redis: A client of the Redis that holds the dead-letter stream and its sources.
        dead_stream: The dead-letter stream, e.g. ``bot_events:dead``.
        source_stream: Where letters go back to when they do not say (no
            ``codex.dead.stream`` field) and the dead stream's name does not end in ``:dead``.
        scripts: The registered scripts; made for ``redis`` when None.
    """

    def __init__(
        self, redis: Redis, dead_stream: str, source_stream: str, scripts: Scripts | None = None
    ) -> None:
        self.redis = redis
        self.dead_stream = dead_stream
        self.source_stream = source_stream
        self.scripts = scripts or Scripts(redis)

    async def count(self) -> int:
        """Letters in the stream (0 when it does not exist)."""
        return int(await command(self.redis, "XLEN", self.dead_stream))

    async def iterate(
        self, where: DeadLetterFilter | None = None, limit: int | None = None
    ) -> AsyncIterator[DeadLetterEntry]:
        """Yield the letters that match, oldest first, at most ``limit`` of them."""
        where = where or DeadLetterFilter()
        start, end = where.range_bounds()
        found = 0
        while limit is None or found < limit:
            reply = await command(
                self.redis, "XRANGE", self.dead_stream, start, end, "COUNT", _PAGE
            )
            page = entries(reply)
            for letter_id, fields in page:
                letter = parse_letter(letter_id, fields, self.dead_stream, self.source_stream)
                if where.matches(letter):
                    found += 1
                    yield letter
                    if limit is not None and found >= limit:
                        return
            if len(page) < _PAGE:
                return
            start = next_id(page[-1][0])

    async def get(self, letter_id: str) -> DeadLetterEntry | None:
        """The letter with this id; None when there is none."""
        reply = await command(self.redis, "XRANGE", self.dead_stream, letter_id, letter_id)
        for found_id, fields in entries(reply):
            return parse_letter(found_id, fields, self.dead_stream, self.source_stream)
        return None

    async def replay_one(self, letter: DeadLetterEntry) -> ReplayedLetter:
        """Move one letter back to its source stream (see ``replayed_fields``), atomically.

        Returns:
            What was added; ``entry_id`` is None when the letter was already gone.

        Raises:
            redis.exceptions.ResponseError: the source key is not a stream; the letter stays.
        """
        entry_id = await self.scripts.move_letter(
            letter.source_stream, self.dead_stream, letter.id, replayed_fields(letter)
        )
        return ReplayedLetter(
            dead_id=letter.id,
            stream=letter.source_stream,
            entry_id=entry_id,
            event_type=letter.event_type,
            handler=letter.handler,
        )

    async def replay(
        self,
        where: DeadLetterFilter | None = None,
        *,
        limit: int | None = None,
        rate: float | None = None,
        on_replayed: ReplayCallback | None = None,
    ) -> ReplayResult:
        """Move the matching letters back to their source streams, oldest first.

        Args:
            where: Which letters; all when None.
            limit: At most this many.
            rate: At most this many letters per second; None for as fast as Redis takes them.
            on_replayed: Called after each letter.

        Returns:
            The letters moved, and those that were gone when their turn came.
        """
        replayed: list[ReplayedLetter] = []
        skipped: list[str] = []
        started = time.monotonic()
        async for letter in self.iterate(where, limit):
            if rate:
                due = started + (len(replayed) + len(skipped)) / rate
                await asyncio.sleep(max(due - time.monotonic(), 0))
            done = await self.replay_one(letter)
            if done.entry_id is None:
                skipped.append(done.dead_id)
            else:
                replayed.append(done)
            if on_replayed is not None:
                on_replayed(done)
        return ReplayResult(tuple(replayed), tuple(skipped))

    async def purge(
        self, where: DeadLetterFilter | None = None, *, limit: int | None = None
    ) -> int:
        """Delete the matching letters for good.

        Returns:
            How many were deleted.
        """
        deleted = 0
        batch: list[str] = []
        async for letter in self.iterate(where, limit):
            batch.append(letter.id)
            if len(batch) >= _DELETE_BATCH:
                deleted += int(await command(self.redis, "XDEL", self.dead_stream, *batch))
                batch.clear()
        if batch:
            deleted += int(await command(self.redis, "XDEL", self.dead_stream, *batch))
        return deleted
