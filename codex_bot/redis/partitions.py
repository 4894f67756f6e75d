"""``PartitionSet``: the replicas of a group divide a stream's partitions between them.

Every replica announces itself in ``<stream>:replicas:<group>`` (a sorted set: consumer name
-> last heartbeat, on Redis's clock) once a ``tick`` (``lease_ttl / 3``, at most a second).
The live replicas, sorted by name, split the partitions the same way everywhere: partition
``i`` belongs to the replica at position ``i mod replicas``. A replica takes the lease of each
partition of its share once it is free, reads it (the previous owner's pending entries
first), and renews the lease every tick. A partition that is no longer its share is handed
over: reading stops, its entries not started yet are left pending, the running ones finish
(however long paced sends take; a warning past ``drain_timeout``) and are acknowledged, and
only then is the lease given back, so the next owner never overlaps it. A replica that dies
stops renewing: its leases expire after ``lease_ttl`` and its heartbeat ages out, and the
others take its partitions over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from codex_bot.redis.backoff import Backoff, Outage
from codex_bot.redis.leases import LeasedStreamStorage, Leases, lease_key
from codex_bot.redis.partitioning import partition_stream
from codex_bot.redis.tasks import cancel

if TYPE_CHECKING:
    from codex_bot.redis.runner import EntryRunner
    from codex_bot.redis.source import StreamSource

logger = logging.getLogger("codex_bot.redis.processor")

SourceFactory = Callable[[LeasedStreamStorage, str], "StreamSource"]
"""``make(storage, partition_stream) -> StreamSource`` for a partition just taken."""


class PartitionSet:
    """Which of a stream's partitions this replica reads, kept in step with the others.

    Args:
        redis: The client of the partitions' Redis.
        stream_name: The partitioned stream (its partitions are ``{<stream>:p<i>}``).
        group_name: The consumer group.
        consumer_name: This replica's consumer (unique per process).
        partitions: How many partitions the stream has.
        lease_ttl: Seconds a lease lasts without renewal.
        drain_timeout: Seconds after which a partition being handed over that still has
            entries running is reported (it is handed over once they finish).
        runner: The processor's entry runner.
        outage: The processor's outage log.
        make_source: Builds the source of a partition just taken.
    """

    def __init__(
        self,
        redis: Any,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        *,
        partitions: int,
        lease_ttl: float,
        drain_timeout: float,
        runner: EntryRunner,
        outage: Outage,
        make_source: SourceFactory,
    ) -> None:
        self.redis = redis
        self.stream_name, self.group_name = stream_name, group_name
        self.consumer_name = consumer_name
        self.count = partitions
        self.lease_ttl = lease_ttl
        self.leases = Leases(redis, consumer_name, int(lease_ttl * 1000))
        self.drain_timeout = drain_timeout
        self.runner = runner
        self.outage = outage
        self.make_source = make_source
        self.members_key = f"{stream_name}:replicas:{group_name}"
        self.tick = min(lease_ttl / 3, 1.0)
        self.owned: dict[int, StreamSource] = {}
        """The partitions whose lease this replica holds, read or being handed over."""
        self._leaving: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def sources(self) -> list[StreamSource]:
        """The sources of the partitions held now."""
        return list(self.owned.values())

    def start(self) -> None:
        """Join the group's replicas and take this replica's share, in the background."""
        self._task = asyncio.create_task(self._run(), name=f"codex-partitions:{self.stream_name}")

    async def stop_rebalancing(self) -> None:
        """Take and give nothing more (the processor then drains what it holds)."""
        task, self._task = self._task, None
        await cancel(task)
        for leaving in list(self._leaving.values()):
            with contextlib.suppress(Exception):
                await leaving

    async def leave(self) -> None:
        """Give every lease back and leave the replicas (after the entries were drained)."""
        for index in list(self.owned):
            with contextlib.suppress(Exception):  # unreleased, it expires after lease_ttl
                await self.leases.release(self._lease(index))
        self.owned.clear()
        with contextlib.suppress(Exception):
            await self.redis.zrem(self.members_key, self.consumer_name)

    async def _run(self) -> None:
        backoff = Backoff(5.0)
        while True:
            try:
                await self._rebalance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the outermost loop must survive anything
                self.outage.failed(exc)
                await backoff.sleep()
                continue
            backoff.reset()
            await asyncio.sleep(self.tick)

    async def _rebalance(self) -> None:
        share = await self._share()
        for index in list(self.owned):
            source = self.owned[index]
            if source.lease_lost or not await self.leases.renew(self._lease(index)):
                await self._lost(index)
            elif index not in share and index not in self._leaving:
                self._leaving[index] = asyncio.create_task(self._hand_over(index))
        for index in sorted(share - set(self.owned)):
            if await self.leases.acquire(self._lease(index)):
                self._take(index)

    async def _share(self) -> set[int]:
        """Heartbeat, then the partitions that are this replica's share of the live replicas."""
        seconds, micros = await self.redis.time()
        now = seconds * 1000 + micros // 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(self.members_key, {self.consumer_name: now})
            pipe.zremrangebyscore(self.members_key, "-inf", now - int(self.lease_ttl * 1000))
            pipe.zrange(self.members_key, 0, -1)
            *_, members = await pipe.execute()
        names = sorted(
            member.decode() if isinstance(member, bytes) else member for member in members
        )
        position = names.index(self.consumer_name)
        return {i for i in range(self.count) if i % len(names) == position}

    def _lease(self, index: int) -> str:
        return lease_key(partition_stream(self.stream_name, index), self.group_name)

    def _take(self, index: int) -> None:
        name = partition_stream(self.stream_name, index)
        storage = LeasedStreamStorage(self.redis, self._lease(index), self.consumer_name)
        source = self.make_source(storage, name)
        self.owned[index] = source
        source.start()
        logger.info("took partition %s of %s", index, self.stream_name)

    async def _lost(self, index: int) -> None:
        """The lease expired or went to another replica: stop at once, acknowledge nothing."""
        source = self.owned.pop(index)
        self._leaving.pop(index, None)
        source.lease_lost = True
        await source.stop_reading()
        await source.finish()
        logger.warning(
            "lost the lease of partition %s of %s; its entries in flight stay pending",
            index,
            self.stream_name,
        )

    async def _hand_over(self, index: int) -> None:
        """Stop reading a partition, let its running entries finish and ACK them, release it.

        Entries not started yet (behind their chat's running one) are left pending for the
        next owner. The lease, still renewed, is given back only once every running entry
        finished, however long paced sends take: the next owner never sends what this
        replica is sending. A processor stopping meanwhile drains it as it drains the rest.
        """
        source = self.owned[index]
        try:
            await source.stop_reading()
            left = self.runner.withdraw(source)
            if not await self._wait_for_running(index, source):
                return  # stopping: the processor's stop drains it and gives the lease back
            await source.finish()
            await self.leases.release(self._lease(index))
            self.owned.pop(index, None)
            logger.info(
                "handed partition %s of %s over (%s entr%s left pending for its next owner)",
                index,
                self.stream_name,
                left,
                "y" if left == 1 else "ies",
            )
        except BaseException:
            self.owned.pop(index, None)
            raise
        finally:
            self._leaving.pop(index, None)

    async def _wait_for_running(self, index: int, source: StreamSource) -> bool:
        """Wait for ``source``'s running entries; False if the set stops rebalancing, or the
        lease is lost, first."""
        waited, warned = 0.0, False
        while not await self.runner.wait_until_done(source, self.tick):
            if self._task is None or source.lease_lost:
                return False
            waited += self.tick
            if waited >= self.drain_timeout and not warned:
                warned = True
                logger.warning(
                    "partition %s of %s: %s handler(s) still running after %.1fs; it is "
                    "handed over once they finish",
                    index,
                    self.stream_name,
                    len(source.inflight),
                    waited,
                )
        return True
