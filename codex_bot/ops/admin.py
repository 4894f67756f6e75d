"""``StreamOps``: look at a stream, its groups and dead letters; replay, purge, prune."""

from __future__ import annotations

from typing import TypedDict

from codex_bot.ops.dead import DeadLetterOps, DeadLetters
from codex_bot.ops.errors import GroupNotChosenError, GroupNotFoundError, StreamNotFoundError
from codex_bot.ops.models import (
    GroupStats,
    PendingEntry,
    PruneResult,
    RetryQueueStats,
    StreamInfo,
    StreamStats,
)
from codex_bot.ops.replies import as_map, command, server_time_ms, show
from codex_bot.ops.scripts import Scripts
from codex_bot.ops.stats import (
    dead_letter_stats,
    group_stats,
    pending_entries,
    retry_queue_stats,
    stream_info,
    xinfo_groups,
)
from codex_bot.redis.cluster import is_cluster
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX
from codex_bot.redis.types import AnyRedis

DEFAULT_ARQ_QUEUE = "arq:queue"
"""arq's default queue, where ``ArqRetryScheduler`` enqueues unless told otherwise."""
REASON_SAMPLE = 10_000
"""``stats`` counts dead-letter reasons over at most this many letters, newest first."""


class StatsOptions(TypedDict, total=False):
    """The keyword arguments of ``stats``, as ``StreamOps.stats`` documents them."""

    arq_redis: AnyRedis | None
    arq_queue: str | None
    reason_sample: int


class StreamOps(DeadLetterOps):
    """Operations on one stream of the bot: what ``codex-bot`` does, from Python.

    Works with any ``redis.asyncio.Redis`` or ``RedisCluster`` client (``decode_responses``
    on or off, RESP2 or RESP3): entries are read undecoded, so fields that are not UTF-8
    are copied byte for byte. On a cluster every command goes to the stream's node; the
    stream and its dead-letter stream must share a slot (a hash tag: ``{bot}:events``) for
    letters to be replayed. ``PartitionedOps`` does the same over a partitioned stream.

    Args:
        redis: A client of the Redis (or cluster) that holds the stream.
        stream: The stream, e.g. ``bot_events``.
        group: The consumer group; None means the stream's only group.
        dead_letter_stream: Its dead-letter stream; ``<stream>:dead`` when None.

    Example:
        ```python
        ops = StreamOps(redis, "bot_events")
        stats = await ops.stats()
        result = await ops.replay(DeadLetterFilter(reason="Forbidden"))
        ```
    """

    def __init__(
        self,
        redis: AnyRedis,
        stream: str,
        *,
        group: str | None = None,
        dead_letter_stream: str | None = None,
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.dead_letter_stream = dead_letter_stream or stream + DEAD_LETTER_SUFFIX
        self._scripts = Scripts(redis)
        self.dead: DeadLetters = DeadLetters(redis, self.dead_letter_stream, stream, self._scripts)

    # -- looking -------------------------------------------------------------------------

    async def group_names(self) -> tuple[str, ...]:
        """The stream's consumer groups.

        Raises:
            StreamNotFoundError: the stream does not exist.
        """
        await stream_info(self.redis, self.stream)
        return tuple(show(group["name"]) for group in await xinfo_groups(self.redis, self.stream))

    async def resolve_group(self) -> str:
        """The group operations apply to: the one given, else the stream's only one.

        Raises:
            StreamNotFoundError: the stream does not exist.
            GroupNotFoundError: the given group does not exist.
            GroupNotChosenError: none was given and the stream has none, or several.
        """
        return choose_group(self.stream, self.group, await self.group_names())

    async def groups(self) -> tuple[GroupStats, ...]:
        """Lag, pending entries and consumers of the group given, or of every group.

        Raises:
            StreamNotFoundError: the stream does not exist.
            GroupNotFoundError: the given group does not exist.
        """
        return await self._groups(await stream_info(self.redis, self.stream))

    async def _groups(self, info: StreamInfo) -> tuple[GroupStats, ...]:
        rows = await xinfo_groups(self.redis, self.stream)
        if self.group is not None:
            rows = [row for row in rows if show(row["name"]) == self.group]
            if not rows:
                raise GroupNotFoundError(self.stream, self.group, await self.group_names())
        return tuple(
            [await group_stats(self.redis, self.stream, row, info.last_id) for row in rows]
        )

    async def stats(
        self,
        *,
        arq_redis: AnyRedis | None = None,
        arq_queue: str | None = DEFAULT_ARQ_QUEUE,
        reason_sample: int = REASON_SAMPLE,
    ) -> StreamStats:
        """The stream, its groups, its dead letters and its retries waiting in arq.

        Args:
            arq_redis: The Redis arq uses, when not the streams' one. arq has no cluster
                support: on a cluster the retries are looked up only when this is given.
            arq_queue: arq's queue; None to skip the retries.
            reason_sample: Count dead-letter reasons over this many letters, newest first.

        Raises:
            StreamNotFoundError: the stream does not exist.
            GroupNotFoundError: the given group does not exist.
        """
        retries = None
        arq_redis = arq_redis or arq_redis_of(self.redis)
        if arq_queue is not None and arq_redis is not None:
            retries = await retry_queue_stats(arq_redis, arq_queue, self.stream)
        return await self.stats_with(retries, reason_sample=reason_sample)

    async def stats_with(
        self,
        retries: RetryQueueStats | None,
        *,
        reason_sample: int = REASON_SAMPLE,
        reason_top: int | None = 5,
        missing_ok: bool = False,
    ) -> StreamStats:
        """``stats()`` with the retries already counted (one pass over arq's queue serves
        every partition).

        Args:
            retries: The stream's retries in arq's queue, or None.
            reason_sample: Count dead-letter reasons over this many letters, newest first.
            reason_top: Keep this many of the most common reasons; None keeps all.
            missing_ok: A stream that does not exist, or lacks the given group, has no group
                (a partition nothing was written to yet, or that no replica read yet)
                rather than raising.

        Raises:
            StreamNotFoundError: the stream does not exist (unless ``missing_ok``).
            GroupNotFoundError: the given group does not exist (unless ``missing_ok``).
        """
        groups: tuple[GroupStats, ...] = ()
        try:
            info = await stream_info(self.redis, self.stream)
        except StreamNotFoundError:
            if not missing_ok:
                raise
            info = StreamInfo(self.stream, 0, None, None)
        else:
            try:
                groups = await self._groups(info)
            except GroupNotFoundError:
                if not missing_ok:
                    raise
        dead = await dead_letter_stats(
            self.redis, self.dead_letter_stream, sample=reason_sample, top=reason_top
        )
        now = await server_time_ms(self.redis, self.stream)
        return StreamStats(info, groups, dead, retries, now)

    async def pending(
        self, *, count: int = 100, consumer: str | None = None
    ) -> tuple[PendingEntry, ...]:
        """The group's pending entries, oldest first.

        Args:
            count: At most this many.
            consumer: Only this consumer's.

        Raises:
            StreamNotFoundError, GroupNotFoundError, GroupNotChosenError: see ``resolve_group``.
        """
        group = await self.resolve_group()
        return await pending_entries(self.redis, self.stream, group, count, consumer)

    async def prune_consumers(self, min_idle_ms: int) -> PruneResult:
        """Delete the group's consumers idle at least ``min_idle_ms`` that hold no entry.

        Each is checked and deleted in one script, so a consumer that got entries or woke
        up since it was listed is kept.

        Raises:
            StreamNotFoundError, GroupNotFoundError, GroupNotChosenError: see ``resolve_group``.
        """
        return await self.prune_group(await self.resolve_group(), min_idle_ms)

    async def prune_group(self, group: str, min_idle_ms: int) -> PruneResult:
        """``prune_consumers`` in ``group``, which must exist."""
        removed: list[str] = []
        kept: list[str] = []
        rows = await command(self.redis, "XINFO", "CONSUMERS", self.stream, group, key=self.stream)
        for row in rows:
            info = as_map(row)
            if int(info["idle"]) < min_idle_ms:
                continue
            name = show(info["name"])
            deleted = await self._scripts.delete_idle_consumer(
                self.stream, group, info["name"], min_idle_ms
            )
            (removed if deleted else kept).append(name)
        return PruneResult(tuple(removed), tuple(kept))


def choose_group(stream: str, given: str | None, names: tuple[str, ...]) -> str:
    """The group ``given`` if ``stream`` has it, else the stream's only group.

    Raises:
        GroupNotFoundError: ``given`` is not among ``names``.
        GroupNotChosenError: none was given and there is no group, or several.
    """
    if given is not None:
        if given not in names:
            raise GroupNotFoundError(stream, given, names)
        return given
    if len(names) != 1:
        raise GroupNotChosenError(stream, names)
    return names[0]


def arq_redis_of(redis: AnyRedis) -> AnyRedis | None:
    """The Redis to look for arq's queue on when none is given: the streams' own, unless it
    is a cluster (arq cannot run on one)."""
    return None if is_cluster(redis) else redis
