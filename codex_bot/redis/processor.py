"""``RedisStreamProcessor``: the consumer-group loop that runs inside the bot process.

One task reads (a blocking XREADGROUP with a timeout), up to ``max_concurrency`` handlers run
on a worker pool, events with the same ordering key run one after another in stream order,
and one task acknowledges finished entries in batches. An entry is acknowledged only after its
callback returned, or after it was moved to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from codex_bot.redis.acks import AckBuffer
from codex_bot.redis.adapter import BasicStorageAdapter
from codex_bot.redis.backoff import MIN_BACKOFF, Backoff, Outage
from codex_bot.redis.codec import DEFAULT_LIMITS, EntryLimits
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX
from codex_bot.redis.exceptions import CodexBotError
from codex_bot.redis.group import GroupKeeper, group_lost
from codex_bot.redis.keepalive import HeldEntries
from codex_bot.redis.letters import DELETED, letter
from codex_bot.redis.runner import EntryRunner
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.types import (
    ClaimPage,
    Entry,
    HeldEntriesProtocol,
    MessageCallback,
    OrderingKeyFunc,
    ReliableStreamStorageProtocol,
    RetryLedgerProtocol,
    StreamStorageProtocol,
)

logger = logging.getLogger(__name__)

_MAX_READ = 1000
"""Upper bound of one XREADGROUP COUNT while a backlog drains."""
_CURSOR_DONE = ("0-0", "0")
_FIRST_DELIVERY: Mapping[str, int] = {}
"""Delivery counts of entries read for the first time: none known, each counts as 1."""

PageFetcher = Callable[[str, int], Awaitable[ClaimPage]]
"""``fetch(cursor, count)``: one page of the pending entries list."""


def default_ordering_key(payload: Mapping[str, Any]) -> Any:
    """The payload's ``chat_id``, else its ``user_id``, else None (no ordering)."""
    key = payload.get("chat_id")
    return payload.get("user_id") if key is None else key


class RedisStreamProcessor:
    """Consumes a Redis Stream through a consumer group and hands each event to a callback.

    At-least-once: an entry is ACKed only after the callback returned (or the entry was
    dead-lettered); a crash leaves it pending and a restarted or another consumer claims it.
    Several bot processes share the work by joining the same group with their own
    ``consumer_name``.

    Args:
        storage: ``RedisStreamStorage`` or any ``StreamStorageProtocol`` implementation (one
            with only the basic methods is wrapped in ``BasicStorageAdapter``).
        stream_name: The stream to consume.
        consumer_group_name: The group shared by every bot process.
        consumer_name: This process's name in the group (unique per process).
        batch_count: Entries per read while the stream is quiet; reads grow up to
            ``max_concurrency`` while a backlog drains.
        poll_interval: Longest time one read waits on the server for new entries; it ends
            sooner for the next claim sweep. An event is handled as soon as it arrives.
        claim_min_idle_ms: Idle time after which another consumer's pending entry is claimed.
        claim_interval: Seconds between XAUTOCLAIM sweeps; one sweep also runs at start.
        max_deliveries: An entry delivered more often than this goes to the dead-letter stream.
        drain_timeout: Seconds ``stop_listening()`` lets in-flight handlers finish.
        max_concurrency: Handlers in flight at once; reading pauses at the limit.
        ordering_key: ``payload -> key``; events with the same key run one after another in
            stream order. Default: ``chat_id``, else ``user_id``. None: no ordering.
        dead_letter_stream: Where bad entries go; default ``<stream_name>:dead``.
        max_backoff: Longest wait, in seconds, between attempts while Redis is unreachable;
            the wait starts at 50 ms and doubles up to this.
        entry_limits: Bounds on an entry's fields, size, JSON nesting and ``type`` length;
            an entry beyond one is dead-lettered with a reason naming it.
        start_id: Where a consumer group that does not exist yet starts: ``"0"`` (the
            default) handles everything the stream holds, so a renamed group replays the
            stream; ``"$"`` only what arrives from now on; or an entry id.
    """

    def __init__(
        self,
        storage: StreamStorageProtocol | ReliableStreamStorageProtocol,
        stream_name: str,
        consumer_group_name: str,
        consumer_name: str,
        batch_count: int = 10,
        poll_interval: float = 1.0,
        *,
        claim_min_idle_ms: int = 60_000,
        claim_interval: float = 30.0,
        max_deliveries: int = 10,
        drain_timeout: float = 10.0,
        max_concurrency: int = 100,
        ordering_key: OrderingKeyFunc | None = default_ordering_key,
        dead_letter_stream: str | None = None,
        max_backoff: float = 5.0,
        entry_limits: EntryLimits = DEFAULT_LIMITS,
        start_id: str = "0",
    ) -> None:
        if batch_count < 1 or max_concurrency < 1:
            msg = "batch_count and max_concurrency must be at least 1"
            raise ValueError(msg)
        self.storage = storage
        self.stream_name = stream_name
        self.group_name = consumer_group_name
        self.consumer_name = consumer_name
        self.batch_count = batch_count
        self.poll_interval = poll_interval
        self.claim_min_idle_ms = claim_min_idle_ms
        self.claim_interval = claim_interval
        self.max_deliveries = max_deliveries
        self.drain_timeout = drain_timeout
        self.max_concurrency = max_concurrency
        self.ordering_key = ordering_key
        self.dead_letter_stream = dead_letter_stream or stream_name + DEAD_LETTER_SUFFIX
        self.max_backoff = max(max_backoff, MIN_BACKOFF)
        self.stats = ProcessorStats()
        self._storage: ReliableStreamStorageProtocol = (
            storage
            if isinstance(storage, ReliableStreamStorageProtocol)
            else BasicStorageAdapter(storage)
        )
        self._ledger = storage if isinstance(storage, RetryLedgerProtocol) else None
        self._outage = Outage(stream_name, self.stats, logger)
        self._group = GroupKeeper(
            self._storage, stream_name, consumer_group_name, consumer_name, self.stats, start_id
        )
        capacity = asyncio.Event()
        self._acks = AckBuffer(
            self._storage,
            stream_name,
            consumer_group_name,
            stats=self.stats,
            outage=self._outage,
            backoff=Backoff(max_backoff),
            on_acked=capacity.set,
            limit=max_concurrency * 10,
        )
        self._runner = EntryRunner(
            self._storage,
            stream_name,
            consumer_group_name,
            self.dead_letter_stream,
            stats=self.stats,
            acks=self._acks,
            group=self._group,
            max_concurrency=max_concurrency,
            max_deliveries=max_deliveries,
            limits=entry_limits,
            ordering_key=ordering_key,
            capacity=capacity,
            ledger=self._ledger,
        )
        self._held = (
            HeldEntries(
                storage,
                stream_name,
                consumer_group_name,
                consumer_name,
                self._runner.held,
                claim_min_idle_ms,
            )
            if isinstance(storage, HeldEntriesProtocol)
            else None
        )
        self._has_callback = False
        self._announced = False
        self._running = False
        self._loop_task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0
        self._read_count = batch_count

    # -- public lifecycle --------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True between ``start_listening()`` and ``stop_listening()``."""
        return self._running

    @property
    def is_healthy(self) -> bool:
        """Running, the group is in place, the last Redis call succeeded and nothing is parked."""
        return (
            self._running
            and self._group.ready
            and self._outage.since is None
            and not self._runner.parked
        )

    @property
    def parked(self) -> dict[str, str]:
        """Entries whose dead letter could not be written, with why (a copy).

        They stay pending in Redis and this process leaves them alone, so a letter that
        cannot be written does not loop for ever; fix the cause (the dead-letter stream's key,
        memory) and call ``release_parked()``, or restart the process.
        """
        return dict(self._runner.parked)

    def release_parked(self) -> list[str]:
        """Let the claim sweep try the parked entries again; return their ids."""
        released = list(self._runner.parked)
        self._runner.parked.clear()
        self._next_sweep = 0.0
        return released

    @property
    def in_flight(self) -> int:
        """Entries read and not finished yet (running or waiting for their key)."""
        return self._runner.in_flight

    @property
    def message_callback(self) -> MessageCallback | None:
        """The callback set with ``set_message_callback``, or None."""
        return self._runner.callback if self._has_callback else None

    def set_message_callback(self, callback: MessageCallback) -> None:
        """Set the async callable each event goes to.

        A callback that accepts a ``stream_name`` keyword (such as
        ``BotRedisDispatcher.process_message``) gets this processor's stream name, so
        retries go back to the stream the event came from. When it returns a report with
        ``dead_letters`` (as the dispatcher does), those failures go to the dead-letter stream.
        """
        self._runner.set_callback(callback)
        self._has_callback = True

    async def start_listening(self) -> None:
        """Start consuming in the background and return at once.

        The group is created (at id ``0``, with MKSTREAM) by the background task, so an
        unreachable Redis does not hold the bot's start-up: the loop retries with capped
        backoff until Redis answers.

        Raises:
            CodexBotError: no message callback was set.
        """
        if self._running:
            logger.warning("processor for %s is already running", self.stream_name)
            return
        if not self._has_callback:
            msg = "call set_message_callback() before start_listening()"
            raise CodexBotError(msg)
        if isinstance(self._storage, BasicStorageAdapter):
            logger.warning(
                "%s lacks ReliableStreamStorageProtocol: sleep-polling reads, no "
                "max_deliveries, no dead letters",
                type(self.storage).__name__,
            )
        self._running = True
        self._runner.open()
        self._group.lost()
        self._announced = False
        self._next_sweep = 0.0
        self._loop_task = asyncio.create_task(self._run(), name=f"codex-read:{self.stream_name}")
        self._ack_task = asyncio.create_task(self._acks.run(), name=f"codex-ack:{self.stream_name}")
        if self._held is not None:
            self._held.start()

    async def stop_listening(self) -> None:
        """Stop reading, let in-flight handlers finish (up to ``drain_timeout``), flush ACKs.

        Returns promptly even while a read is blocked on the server. Entries whose handlers
        did not finish in time, and entries read but not started (waiting for their key or a
        worker), stay pending and are handled after a restart or by another consumer. Idempotent.
        """
        if self._loop_task is None:
            return
        self._running = False
        await _cancel(self._loop_task)
        self._loop_task = None
        await self._runner.close(self.drain_timeout)
        if self._held is not None:
            await self._held.stop()
        if self._ack_task is not None:
            await _cancel(self._ack_task)
            self._ack_task = None
        try:
            await self._acks.flush()
        except Exception as exc:  # noqa: BLE001 - unacked entries stay pending, nothing is lost
            logger.warning(
                "could not acknowledge %s entr(ies) of %s at stop; they stay pending: %r",
                len(self._acks),
                self.stream_name,
                exc,
            )
        logger.info("stopped consuming %s", self.stream_name)

    async def __aenter__(self) -> RedisStreamProcessor:
        await self.start_listening()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_listening()

    # -- the read loop -----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = Backoff(self.max_backoff)
        loop = asyncio.get_running_loop()
        while self._running:
            try:
                if not self._group.ready:
                    await self._group.prepare()
                    self._outage.recovered()
                    if not self._announced:  # once per start, when the group is in place
                        self._announced = True
                        logger.info(
                            "consuming %s as %s/%s",
                            self.stream_name,
                            self.group_name,
                            self.consumer_name,
                        )
                    await self._drain_pages(self._own_pending_page, "recovering")
                await self._runner.wait_for_capacity()
                if loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self.claim_interval
                    await self._drain_pages(self._stale_page, "claimed")
                    await self._reap_retries()
                entries = await self._read(self._next_sweep - loop.time())
                self._outage.recovered()
                backoff.reset()
                await self._runner.submit_all(entries)
                if entries:
                    # let the workers take the batch before sizing the next read
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the outermost loop must survive anything
                if group_lost(exc) and self._group.ready:
                    logger.warning(
                        "consumer group %s on %s is gone: %s",
                        self.group_name,
                        self.stream_name,
                        exc,
                    )
                    self._group.lost()
                    continue
                self._outage.failed(exc)
                await backoff.sleep()

    async def _read(self, until_sweep: float) -> list[Entry]:
        storage, stream, group, consumer = (
            self._storage,
            self.stream_name,
            self.group_name,
            self.consumer_name,
        )
        count = min(self._read_count, self._runner.free_slots())
        # wake up for the next claim sweep even on a quiet stream
        block_ms = max(int(min(self.poll_interval, until_sweep) * 1000), 1)
        if self._read_count > self.batch_count and len(self._acks):
            # a backlog, so the read will not block: what finished since the last read rides
            # along, one round trip for both
            entries = await self._acks.ride_along(
                lambda ids: storage.ack_and_read_new(stream, group, consumer, ids, count, block_ms)
            )
        else:
            entries = await storage.read_new(stream, group, consumer, count, block_ms)
        # a backlog: read more at once (bounded by free slots); quiet: back to batch_count
        if len(entries) >= count:
            self._read_count = min(max(self._read_count * 2, self.batch_count), _MAX_READ)
        else:
            self._read_count = self.batch_count
        return entries

    async def _reap_retries(self) -> None:
        """Dead-letter the retries of this stream that arq lost (a storage with a ledger)."""
        if self._ledger is None:
            return
        lost = await self._ledger.reap_retries(self.stream_name, self.dead_letter_stream)
        if lost:
            self.stats.dead_lettered += lost
            logger.error(
                "moved %s retr(ies) of %s that arq lost to %s",
                lost,
                self.stream_name,
                self.dead_letter_stream,
            )

    async def _own_pending_page(self, cursor: str, count: int) -> ClaimPage:
        entries = await self._storage.read_own_pending(
            self.stream_name, self.group_name, self.consumer_name, cursor, count
        )
        return ClaimPage(entries[-1][0] if entries else _CURSOR_DONE[0], entries, [])

    async def _stale_page(self, cursor: str, count: int) -> ClaimPage:
        return await self._storage.claim_stale(
            self.stream_name,
            self.group_name,
            self.consumer_name,
            self.claim_min_idle_ms,
            cursor,
            count,
        )

    async def _drain_pages(self, fetch: PageFetcher, verb: str) -> None:
        """Page through pending entries from the start, handing what each page brings on."""
        cursor = _CURSOR_DONE[0]
        while self._running:
            await self._runner.wait_for_capacity()
            page = await fetch(cursor, self._runner.free_slots())
            for entry_id in page.deleted_ids:
                # Redis >= 7 already dropped it from the PEL; record the loss where it shows
                letter_ = letter({}, self.stream_name, entry_id, DELETED, 0)
                await self._runner.dead_letter_quietly(entry_id, letter_)
            fresh = [entry for entry in page.entries if not self._runner.skips(entry[0])]
            if fresh:
                counts = await self._storage.delivery_counts(
                    self.stream_name, self.group_name, [entry_id for entry_id, _ in fresh]
                )
                logger.info("%s %s pending entr(ies) of %s", verb, len(fresh), self.stream_name)
                await self._runner.submit_all(fresh, counts)
            cursor = page.next_cursor
            if cursor in _CURSOR_DONE:
                return


async def _cancel(task: asyncio.Task[None]) -> None:
    # asyncio.wait_for before 3.12 (redis-py wraps commands in it when socket_timeout is
    # set) can swallow a cancellation that lands as the command completes: repeat it
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
