"""``PartitionedOps``: the operations of ``StreamOps`` over every partition of a stream.

A stream produced with ``StreamProducer(..., partitions=N)`` is N streams, ``{<stream>:p0}``
to ``{<stream>:p<N-1>}``, each with its own consumer group and its own dead letters
(``{<stream>:p3}:dead``). This looks at all of them: stats per partition and in total,
pending entries and dead letters of every partition (each names its partition), and
replays that put every letter back on the partition it came from.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from codex_bot.ops.admin import (
    DEFAULT_ARQ_QUEUE,
    REASON_SAMPLE,
    StatsOptions,
    StreamOps,
    arq_redis_of,
    choose_group,
)
from codex_bot.ops.dead import DeadLetterOps, MergedDeadLetters
from codex_bot.ops.errors import GroupNotFoundError, StreamNotFoundError
from codex_bot.ops.models import (
    PartitionedStats,
    PendingEntry,
    PruneResult,
)
from codex_bot.ops.replies import id_key
from codex_bot.ops.stats import pending_entries, retries_by_stream
from codex_bot.ops.totals import total_stats
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX
from codex_bot.redis.partitioning import check_partitioned_name, partition_stream
from codex_bot.redis.types import AnyRedis

if TYPE_CHECKING:
    from typing_extensions import Unpack


class PartitionedOps(DeadLetterOps):
    """Operations on a partitioned stream: each partition, and all of them as one.

    The methods are those of ``StreamOps``; pending entries and dead letters come from
    every partition, oldest first, and say which one (``PendingEntry.stream``,
    ``DeadLetterEntry.source_stream``); a replay puts each letter back on its partition.
    A partition nothing was written to yet counts as empty.

    Args:
        redis: A client of the Redis (or cluster) that holds the partitions.
        stream: The partitioned stream's name, as given to the producer (``bot_events``).
        partitions: How many partitions it has (the producer's ``partitions``).
        group: The consumer group; None means the only group the partitions have.

    Raises:
        ValueError: ``partitions`` below 1, or a name with braces.

    Example:
        ```python
        ops = PartitionedOps(redis, "bot_events", partitions=8)
        stats = await ops.stats()                     # stats.partitions[3], stats.total
        await ops.replay(DeadLetterFilter(event_type="order.paid"))
        ```
    """

    def __init__(
        self, redis: AnyRedis, stream: str, partitions: int, *, group: str | None = None
    ) -> None:
        check_partitioned_name(stream, partitions)
        self.redis = redis
        self.stream = stream
        self.group = group
        self.partitions = tuple(
            StreamOps(redis, partition_stream(stream, index), group=group)
            for index in range(partitions)
        )
        """One ``StreamOps`` per partition, partition 0 first."""
        self.dead_letter_stream = partition_stream(stream, 0).replace(":p0}", ":p*}") + (
            DEAD_LETTER_SUFFIX
        )
        """The partitions' dead-letter streams, as a pattern: ``{bot_events:p*}:dead``."""
        self.dead = MergedDeadLetters([ops.dead for ops in self.partitions])

    # -- looking -------------------------------------------------------------------------

    async def _names_by_partition(self) -> list[tuple[str, ...] | None]:
        """Each partition's group names; None for a partition that does not exist."""

        async def names(ops: StreamOps) -> tuple[str, ...] | None:
            try:
                return await ops.group_names()
            except StreamNotFoundError:
                return None

        found = await asyncio.gather(*(names(ops) for ops in self.partitions))
        if all(each is None for each in found):
            raise StreamNotFoundError(self.stream, [ops.stream for ops in self.partitions])
        return found

    async def group_names(self) -> tuple[str, ...]:
        """The consumer groups of any partition, sorted.

        Raises:
            StreamNotFoundError: no partition exists.
        """
        return _union(await self._names_by_partition())

    async def resolve_group(self) -> str:
        """The group operations apply to: the one given, else the partitions' only one.

        Raises:
            StreamNotFoundError: no partition exists.
            GroupNotFoundError: no partition has the given group.
            GroupNotChosenError: none was given and the partitions have none, or several.
        """
        return self._resolve(_union(await self._names_by_partition()))

    def _resolve(self, names: tuple[str, ...]) -> str:
        return choose_group(self.stream, self.group, names)

    async def _with_group(self) -> tuple[str, list[StreamOps]]:
        """The group (see ``resolve_group``), and the partitions that have it."""
        found = await self._names_by_partition()
        group = self._resolve(_union(found))
        having = zip(self.partitions, found, strict=True)
        return group, [ops for ops, names in having if names is not None and group in names]

    async def stats(self, **options: Unpack[StatsOptions]) -> PartitionedStats:
        """Every partition's stats, and their total.

        Args:
            options: ``arq_redis``, ``arq_queue`` and ``reason_sample``, as in
                ``StreamOps.stats``; the reasons are counted per partition.

        Raises:
            StreamNotFoundError: no partition exists.
            GroupNotFoundError: no partition has the given group.
        """
        found = await self._names_by_partition()
        if self.group is not None and self.group not in _union(found):
            raise GroupNotFoundError(self.stream, self.group, _union(found))
        names = [ops.stream for ops in self.partitions]
        retries = None
        arq_redis = options.get("arq_redis") or arq_redis_of(self.redis)
        arq_queue = options.get("arq_queue", DEFAULT_ARQ_QUEUE)
        if arq_queue is not None and arq_redis is not None:
            retries = await retries_by_stream(arq_redis, arq_queue, names)
        reason_sample = options.get("reason_sample", REASON_SAMPLE)
        parts = await asyncio.gather(
            *(
                ops.stats_with(
                    None if retries is None else retries[ops.stream],
                    reason_sample=reason_sample,
                    reason_top=None,
                    missing_ok=True,
                )
                for ops in self.partitions
            )
        )
        return total_stats(self.stream, self.dead_letter_stream, parts)

    async def pending(
        self, *, count: int = 100, consumer: str | None = None
    ) -> tuple[PendingEntry, ...]:
        """The group's pending entries in every partition, oldest first (by id).

        Raises:
            StreamNotFoundError, GroupNotFoundError, GroupNotChosenError: see ``resolve_group``.
        """
        group, having = await self._with_group()
        found = await asyncio.gather(
            *(pending_entries(self.redis, ops.stream, group, count, consumer) for ops in having)
        )
        merged = sorted((entry for part in found for entry in part), key=lambda e: id_key(e.id))
        return tuple(merged[:count])

    async def prune_consumers(self, min_idle_ms: int) -> PruneResult:
        """Delete the group's idle consumers that hold no entry, in every partition.

        Returns:
            ``removed``: consumers deleted from every partition where they were idle long
            enough; ``kept``: consumers kept in at least one (they hold entries there).

        Raises:
            StreamNotFoundError, GroupNotFoundError, GroupNotChosenError: see ``resolve_group``.
        """
        group, having = await self._with_group()
        removed: dict[str, None] = {}
        kept: dict[str, None] = {}
        for ops in having:
            result = await ops.prune_group(group, min_idle_ms)
            removed.update(dict.fromkeys(result.removed))
            kept.update(dict.fromkeys(result.kept))
        return PruneResult(tuple(name for name in removed if name not in kept), tuple(kept))


def _union(found: list[tuple[str, ...] | None]) -> tuple[str, ...]:
    return tuple(sorted({name for names in found if names for name in names}))
