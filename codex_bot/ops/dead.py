"""Dead-letter operations: list, replay, purge.

Letters are read page by page, oldest first, so a dead-letter stream of any size is
handled in bounded memory; each replay or delete is its own atomic step, so a run that is
interrupted and started again picks up where it stopped. ``MergedDeadLetters`` does the
same over the dead-letter streams of a partitioned stream's partitions.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import time
from collections import defaultdict
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, TypedDict

from codex_bot.ops.errors import AmbiguousLetterError
from codex_bot.ops.letters import DeadLetterFilter, parse_letter, replayed_fields
from codex_bot.ops.models import DeadLetterEntry, ReplayedLetter, ReplayResult
from codex_bot.ops.moves import RESERVATIONS_SUFFIX
from codex_bot.ops.replies import command, entries, id_key, next_id
from codex_bot.ops.scripts import Scripts
from codex_bot.redis.types import AnyRedis

if TYPE_CHECKING:
    from typing_extensions import Unpack

_PAGE = 100
_DELETE_BATCH = 500

ReplayCallback = Callable[[ReplayedLetter], None]
"""Called after each letter of a replay, e.g. to advance a progress bar."""


class ReplayOptions(TypedDict, total=False):
    """The keyword arguments of ``replay``, as ``LetterSet.replay`` documents them."""

    limit: int | None
    rate: float | None
    on_replayed: ReplayCallback | None


class LetterSet(abc.ABC):
    """Letters in one or more dead-letter streams: what ``replay`` and ``purge`` work on.

    Args:
        redis: A client of the Redis (or cluster) that holds the streams.
        scripts: The registered scripts; made for ``redis`` when None.
    """

    def __init__(self, redis: AnyRedis, scripts: Scripts | None = None) -> None:
        self.redis = redis
        self.scripts = scripts or Scripts(redis)

    @abc.abstractmethod
    async def count(self) -> int:
        """Letters in all (0 when none exists)."""

    @abc.abstractmethod
    def iterate(
        self, where: DeadLetterFilter | None = None, limit: int | None = None
    ) -> AsyncGenerator[DeadLetterEntry, None]:
        """Yield the letters that match, oldest first, at most ``limit`` of them."""

    @abc.abstractmethod
    async def get(self, letter_id: str) -> DeadLetterEntry | None:
        """The letter with this id; None when there is none."""

    async def replay_one(self, letter: DeadLetterEntry) -> ReplayedLetter:
        """Move one letter back to its source stream (see ``replayed_fields``), atomically.

        Returns:
            What was added; ``entry_id`` is None when the letter was already gone.

        Raises:
            redis.exceptions.ResponseError: the source key is not a stream; the letter stays.
            OpsError: see ``Scripts.move_letter``; the letter stays.
        """
        entry_id = await self.scripts.move_letter(
            letter.source_stream, letter.dead_stream, letter.id, replayed_fields(letter)
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
        batches: defaultdict[str, list[str]] = defaultdict(list)
        async for letter in self.iterate(where, limit):
            batch = batches[letter.dead_stream]
            batch.append(letter.id)
            if len(batch) >= _DELETE_BATCH:
                deleted += await self._delete(letter.dead_stream, batch)
                batch.clear()
        for dead_stream, batch in batches.items():
            if batch:
                deleted += await self._delete(dead_stream, batch)
        return deleted

    async def _delete(self, dead_stream: str, ids: list[str]) -> int:
        # a reservation left by an interrupted move of a huge letter goes with the letter
        reservations = dead_stream + RESERVATIONS_SUFFIX
        await command(self.redis, "HDEL", reservations, *ids, key=reservations)
        return int(await command(self.redis, "XDEL", dead_stream, *ids, key=dead_stream))


class DeadLetters(LetterSet):
    """The letters of one dead-letter stream.

    Args:
        redis: A client of the Redis (or cluster) that holds the dead-letter stream and its
            sources (on a cluster, in one slot: ``{bot}:events:dead``).
        dead_stream: The dead-letter stream, e.g. ``bot_events:dead``.
        source_stream: Where letters go back to when they do not say (no
            ``codex.dead.stream`` field) and the dead stream's name does not end in ``:dead``.
        scripts: The registered scripts; made for ``redis`` when None.
    """

    def __init__(
        self,
        redis: AnyRedis,
        dead_stream: str,
        source_stream: str,
        scripts: Scripts | None = None,
    ) -> None:
        super().__init__(redis, scripts)
        self.dead_stream = dead_stream
        self.source_stream = source_stream

    async def count(self) -> int:
        """Letters in the stream (0 when it does not exist)."""
        return int(await command(self.redis, "XLEN", self.dead_stream, key=self.dead_stream))

    async def iterate(
        self, where: DeadLetterFilter | None = None, limit: int | None = None
    ) -> AsyncGenerator[DeadLetterEntry, None]:
        """Yield the letters that match, oldest first, at most ``limit`` of them."""
        where = where or DeadLetterFilter()
        start, end = where.range_bounds()
        found = 0
        while limit is None or found < limit:
            reply = await command(
                self.redis,
                "XRANGE",
                self.dead_stream,
                start,
                end,
                "COUNT",
                _PAGE,
                key=self.dead_stream,
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
        reply = await command(
            self.redis, "XRANGE", self.dead_stream, letter_id, letter_id, key=self.dead_stream
        )
        for found_id, fields in entries(reply):
            return parse_letter(found_id, fields, self.dead_stream, self.source_stream)
        return None


class MergedDeadLetters(LetterSet):
    """The letters of several dead-letter streams (a partitioned stream's), as one.

    Letters are listed oldest first across all of them (by id, which is a time); each is
    replayed to the stream it names (its partition) and deleted from its own dead stream.

    Args:
        parts: The dead-letter streams, each a ``DeadLetters`` on the same client.
    """

    def __init__(self, parts: Sequence[DeadLetters]) -> None:
        if not parts:
            msg = "MergedDeadLetters needs at least one dead-letter stream"
            raise ValueError(msg)
        super().__init__(parts[0].redis, parts[0].scripts)
        self.parts = tuple(parts)

    async def count(self) -> int:
        """Letters in all the dead-letter streams."""
        return sum(await asyncio.gather(*(part.count() for part in self.parts)))

    async def iterate(
        self, where: DeadLetterFilter | None = None, limit: int | None = None
    ) -> AsyncGenerator[DeadLetterEntry, None]:
        """Yield the letters that match from every stream, oldest first, at most ``limit``."""
        sources = [part.iterate(where) for part in self.parts]
        heads: list[tuple[tuple[int, int], int, DeadLetterEntry]] = []
        for index, source in enumerate(sources):
            await _push(heads, index, source)
        found = 0
        try:
            while heads and (limit is None or found < limit):
                _, index, letter = heapq.heappop(heads)
                found += 1
                yield letter
                await _push(heads, index, sources[index])
        finally:
            for source in sources:
                await source.aclose()

    async def get(self, letter_id: str) -> DeadLetterEntry | None:
        """The letter with this id.

        Raises:
            AmbiguousLetterError: letters with this id are in several of the streams.
        """
        found = [
            letter
            for letter in await asyncio.gather(*(part.get(letter_id) for part in self.parts))
            if letter is not None
        ]
        if len(found) > 1:
            raise AmbiguousLetterError(letter_id, [letter.dead_stream for letter in found])
        return found[0] if found else None


async def _push(
    heads: list[tuple[tuple[int, int], int, DeadLetterEntry]],
    index: int,
    source: AsyncGenerator[DeadLetterEntry, None],
) -> None:
    letter = await anext(source, None)
    if letter is not None:
        heapq.heappush(heads, (id_key(letter.id), index, letter))


class DeadLetterOps:
    """The dead-letter operations of ``StreamOps`` and ``PartitionedOps``, on their letters."""

    dead: LetterSet

    async def dead_letters(
        self, where: DeadLetterFilter | None = None, *, limit: int | None = None
    ) -> tuple[DeadLetterEntry, ...]:
        """The matching dead letters, oldest first (``dead.iterate`` streams them instead)."""
        return tuple([letter async for letter in self.dead.iterate(where, limit)])

    async def dead_letter(self, letter_id: str) -> DeadLetterEntry | None:
        """One dead letter by id; None when there is none.

        Raises:
            AmbiguousLetterError: on a partitioned stream, two partitions hold a letter with
                this id (name the partition's stream with ``StreamOps`` instead).
        """
        return await self.dead.get(letter_id)

    async def replay(
        self, where: DeadLetterFilter | None = None, **options: Unpack[ReplayOptions]
    ) -> ReplayResult:
        """Put the matching dead letters back, each on the stream (or partition) it came from.

        ``limit``, ``rate`` and ``on_replayed`` as in ``LetterSet.replay``.
        """
        return await self.dead.replay(where, **options)

    async def purge(
        self, where: DeadLetterFilter | None = None, *, limit: int | None = None
    ) -> int:
        """Delete the matching dead letters; returns how many were deleted."""
        return await self.dead.purge(where, limit=limit)
