"""``StreamSource``: one stream a processor consumes, from its consumer group to its ACKs.

A source keeps the group in place (``GroupKeeper``), reads new entries with a blocking
XREADGROUP, recovers its own pending entries at start, sweeps stale ones from dead consumers,
dead-letters the retries arq lost, acknowledges in batches (``AckBuffer``) and keeps the
entries it holds from looking idle (``HeldEntries``). The entries it reads run on the
processor's shared ``EntryRunner``. A processor without partitions has one source; with
partitions, one per partition it holds the lease of.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codex_bot.redis.acks import AckBuffer
from codex_bot.redis.backoff import Backoff, Outage
from codex_bot.redis.exceptions import LeaseLostError
from codex_bot.redis.group import GroupKeeper, group_lost
from codex_bot.redis.keepalive import HeldEntries
from codex_bot.redis.letters import DELETED, letter
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.tasks import cancel
from codex_bot.redis.types import (
    ClaimPage,
    ConsumerUpkeepProtocol,
    Entry,
    GroupConsumer,
    ReliableStreamStorageProtocol,
    RetryLedgerProtocol,
)

if TYPE_CHECKING:
    from codex_bot.redis.runner import EntryRunner

logger = logging.getLogger("codex_bot.redis.processor")

_MAX_READ = 1000
"""Upper bound of one XREADGROUP COUNT while a backlog drains."""
_CURSOR_DONE = ("0-0", "0")

PageFetcher = Callable[[str, int], Awaitable[ClaimPage]]
"""``fetch(cursor, count)``: one page of the pending entries list."""


@dataclass(frozen=True, slots=True)
class ReadSettings:
    """How a source reads: the processor's settings of the same names."""

    batch_count: int
    poll_interval: float
    claim_min_idle_ms: int
    claim_interval: float
    max_backoff: float
    start_id: str


class StreamSource:
    """One stream a processor consumes.

    Args:
        storage: Its I/O (for a partition: one that checks the lease on every read and ACK).
        stream_name: The stream.
        group_name: The consumer group.
        consumer_name: This process's consumer.
        dead_letter_stream: Where its bad entries go.
        settings: How it reads.
        runner: The processor's entry runner.
        stats: The processor's counters.
        outage: The processor's outage log.
        takes_over: A partition this replica just took the lease of: before reading new
            entries, claim every pending entry of the previous owner, in id order.
    """

    def __init__(
        self,
        storage: ReliableStreamStorageProtocol,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        dead_letter_stream: str,
        *,
        settings: ReadSettings,
        runner: EntryRunner,
        stats: ProcessorStats,
        outage: Outage,
        takes_over: bool = False,
    ) -> None:
        self.storage = storage
        self.stream_name = stream_name
        self.group_name = group_name
        self.consumer_name = consumer_name
        self.who = GroupConsumer(stream_name, group_name, consumer_name)
        self.dead_letter_stream = dead_letter_stream
        self.settings = settings
        self.runner = runner
        self.stats = stats
        self.outage = outage
        self.ledger = storage if isinstance(storage, RetryLedgerProtocol) else None
        self.group = GroupKeeper(storage, self.who, stats, settings.start_id)
        self.acks = AckBuffer(
            storage,
            stream_name,
            group_name,
            stats=stats,
            outage=outage,
            backoff=Backoff(settings.max_backoff),
            on_acked=runner.capacity.set,
            limit=runner.max_concurrency * 10,
        )
        self.inflight: set[str] = set()
        """Ids of this stream's entries admitted and not finished."""
        self.parked: dict[str, str] = {}
        """Entries whose dead letter could not be written, with why; they stay pending."""
        self.upkeep = storage if isinstance(storage, ConsumerUpkeepProtocol) else None
        self.held = (
            HeldEntries(self.upkeep, self.who, lambda: self.inflight, settings.claim_min_idle_ms)
            if self.upkeep is not None
            else None
        )
        self.takes_over = takes_over
        self.lease_lost = False
        self._running = False
        self._announced = False
        self._read_count = settings.batch_count
        self._next_sweep = 0.0
        self._loop_task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None

    @property
    def is_healthy(self) -> bool:
        """Reading: the group is in place, Redis answered last, nothing is parked."""
        return self._running and self.group.ready and self.outage.since is None and not self.parked

    def skips(self, entry_id: str) -> bool:
        """Whether a claim must leave this entry alone: it is in flight, or parked."""
        return entry_id in self.inflight or entry_id in self.parked

    def sweep_soon(self) -> None:
        """Run the claim sweep at the next turn of the read loop."""
        self._next_sweep = 0.0

    def start(self) -> None:
        """Start reading and acknowledging in the background."""
        self._running = True
        self.lease_lost = False
        self.group.lost()
        self._announced = False
        self._next_sweep = 0.0
        self._loop_task = asyncio.create_task(self._run(), name=f"codex-read:{self.stream_name}")
        self._ack_task = asyncio.create_task(self.acks.run(), name=f"codex-ack:{self.stream_name}")
        if self.held is not None:
            self.held.start()

    async def stop_reading(self) -> None:
        """Read nothing more; entries already read go on."""
        self._running = False
        task, self._loop_task = self._loop_task, None
        await cancel(task)

    async def finish(self) -> None:
        """After its entries are done (or given up): stop refreshing them, flush the ACKs.

        A consumer left with nothing pending is then removed from the group, so a consumer
        named after its process does not stay behind for good.
        """
        if self.held is not None:
            await self.held.stop()
        task, self._ack_task = self._ack_task, None
        await cancel(task)
        try:
            await self.acks.flush()
        except Exception as exc:  # noqa: BLE001 - unacked entries stay pending, nothing is lost
            logger.warning(
                "could not acknowledge %s entr(ies) of %s at stop; they stay pending: %r",
                len(self.acks),
                self.stream_name,
                exc,
            )
            return
        await self._remove_consumer()

    async def _remove_consumer(self) -> None:
        if self.upkeep is None:
            return
        try:
            removed = await self.upkeep.remove_consumer(self.who)
        except Exception as exc:  # noqa: BLE001 - an idle consumer left behind loses nothing
            logger.debug(
                "could not remove consumer %s of %s: %r", self.consumer_name, self.stream_name, exc
            )
            return
        if removed:
            logger.info(
                "removed consumer %s from %s/%s: nothing pending",
                self.consumer_name,
                self.stream_name,
                self.group_name,
            )

    # -- the read loop -----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.settings.max_backoff)
        loop = asyncio.get_running_loop()
        runner = self.runner
        while self._running:
            try:
                if not self.group.ready:
                    await self._prepare()
                await runner.wait_for_capacity(self)
                if loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self.settings.claim_interval
                    await self._drain_pages(self._stale_page, "claimed")
                    await self._reap_retries()
                entries = await self._read(self._next_sweep - loop.time())
                self.outage.recovered()
                backoff.reset()
                await runner.submit_all(self, entries)
                if entries:
                    # let the workers take the batch before sizing the next read
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except LeaseLostError as exc:
                logger.warning("lost the lease of %s: %s", self.stream_name, exc)
                self.lease_lost, self._running = True, False
                return
            except Exception as exc:  # noqa: BLE001 - the outermost loop must survive anything
                if group_lost(exc) and self.group.ready:
                    logger.warning(
                        "consumer group %s on %s is gone: %s",
                        self.group_name,
                        self.stream_name,
                        exc,
                    )
                    self.group.lost()
                    continue
                self.outage.failed(exc)
                await backoff.sleep()

    async def _prepare(self) -> None:
        """Put the group in place and pick up this consumer's own pending entries first."""
        await self.group.prepare()
        self.outage.recovered()
        if not self._announced:  # once per start, when the group is in place
            self._announced = True
            logger.info(
                "consuming %s as %s/%s", self.stream_name, self.group_name, self.consumer_name
            )
        await self._drain_pages(self._own_pending_page, "recovering")
        if self.takes_over:  # the previous owner's entries first, then new ones
            await self._drain_pages(self._previous_owners_page, "took over")

    async def _read(self, until_sweep: float) -> list[Entry]:
        storage, who = self.storage, self.who
        batch = self.settings.batch_count
        count = min(self._read_count, self.runner.free_slots())
        # wake up for the next claim sweep even on a quiet stream
        block_ms = max(int(min(self.settings.poll_interval, until_sweep) * 1000), 1)
        if self._read_count > batch and len(self.acks):
            # a backlog, so the read will not block: what finished since the last read rides
            # along, one round trip for both
            entries = await self.acks.ride_along(
                lambda ids: storage.ack_and_read_new(who, ids, count, block_ms)
            )
        else:
            entries = await storage.read_new(who, count, block_ms)
        # a backlog: read more at once (bounded by free slots); quiet: back to batch_count
        if len(entries) >= count:
            self._read_count = min(max(self._read_count * 2, batch), _MAX_READ)
        else:
            self._read_count = batch
        return entries

    async def _reap_retries(self) -> None:
        """Dead-letter the retries of this stream that arq lost (a storage with a ledger)."""
        if self.ledger is None:
            return
        lost = await self.ledger.reap_retries(self.stream_name, self.dead_letter_stream)
        if lost:
            self.stats.dead_lettered += lost
            logger.error(
                "moved %s retr(ies) of %s that arq lost to %s",
                lost,
                self.stream_name,
                self.dead_letter_stream,
            )

    async def _own_pending_page(self, cursor: str, count: int) -> ClaimPage:
        entries = await self.storage.read_own_pending(self.who, cursor, count)
        return ClaimPage(entries[-1][0] if entries else _CURSOR_DONE[0], entries, [])

    async def _stale_page(self, cursor: str, count: int) -> ClaimPage:
        return await self.storage.claim_stale(
            self.who, self.settings.claim_min_idle_ms, cursor, count
        )

    async def _previous_owners_page(self, cursor: str, count: int) -> ClaimPage:
        return await self.storage.claim_stale(self.who, 0, cursor, count)

    async def _drain_pages(self, fetch: PageFetcher, verb: str) -> None:
        """Page through pending entries from the start, handing what each page brings on."""
        cursor = _CURSOR_DONE[0]
        runner = self.runner
        while self._running:
            await runner.wait_for_capacity(self)
            page = await fetch(cursor, runner.free_slots())
            for entry_id in page.deleted_ids:
                # Redis >= 7 already dropped it from the PEL; record the loss where it shows
                letter_ = letter({}, self.stream_name, entry_id, DELETED, 0)
                await runner.dead_letter_quietly(self, entry_id, letter_)
            fresh = [entry for entry in page.entries if not self.skips(entry[0])]
            if fresh:
                counts = await self.storage.delivery_counts(
                    self.stream_name, self.group_name, [entry_id for entry_id, _ in fresh]
                )
                logger.info("%s %s pending entr(ies) of %s", verb, len(fresh), self.stream_name)
                await runner.submit_all(self, fresh, counts)
            cursor = page.next_cursor
            if cursor in _CURSOR_DONE:
                return
