"""``RedisStreamProcessor``: the consumer-group loop that runs inside the bot process.

A source reads its stream (a blocking XREADGROUP with a timeout), up to ``max_concurrency``
handlers run on a worker pool, events with the same ordering key run one after another in
stream order, and finished entries are acknowledged in batches. An entry is acknowledged only
after its callback returned, or after it was moved to the dead-letter stream.
"""

from __future__ import annotations

import logging

from codex_bot.redis.adapter import BasicStorageAdapter
from codex_bot.redis.backoff import MIN_BACKOFF, Outage
from codex_bot.redis.cluster import check_same_slot, note_user
from codex_bot.redis.codec import DEFAULT_LIMITS, EntryLimits
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX
from codex_bot.redis.exceptions import CodexBotError
from codex_bot.redis.ledger import LEDGER_SUFFIX
from codex_bot.redis.partitioning import check_partitioned_name, default_ordering_key
from codex_bot.redis.partitions import PartitionSet
from codex_bot.redis.runner import EntryRunner
from codex_bot.redis.source import ReadSettings, StreamSource
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.storage import RedisStreamStorage
from codex_bot.redis.types import (
    MessageCallback,
    OrderingKeyFunc,
    ReliableStreamStorageProtocol,
    StreamStorageProtocol,
)

logger = logging.getLogger(__name__)


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
        partitions: Read the stream as this many partition streams (``{<stream>:p<i>}``,
            written by ``StreamProducer(partitions=...)``), which the replicas sharing the
            group divide between them through leases: a partition is read by one replica at
            a time, so per-key order holds across replicas. None (default): one stream,
            replicas compete for its entries. Needs a ``RedisStreamStorage``.
        lease_ttl: Seconds a partition lease lasts without renewal: how soon the partitions
            of a replica that died are taken over.
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
        partitions: int | None = None,
        lease_ttl: float = 10.0,
    ) -> None:
        if batch_count < 1 or max_concurrency < 1:
            msg = "batch_count and max_concurrency must be at least 1"
            raise ValueError(msg)
        self.storage = storage
        self.stream_name, self.group_name = stream_name, consumer_group_name
        self.consumer_name = consumer_name
        self.batch_count = batch_count
        self.poll_interval = poll_interval
        self.claim_min_idle_ms, self.claim_interval = claim_min_idle_ms, claim_interval
        self.max_deliveries = max_deliveries
        self.drain_timeout = drain_timeout
        self.max_concurrency = max_concurrency
        self.ordering_key = ordering_key
        self.dead_letter_stream = dead_letter_stream or stream_name + DEAD_LETTER_SUFFIX
        self.max_backoff = max(max_backoff, MIN_BACKOFF)
        self.stats = ProcessorStats()
        if isinstance(storage, RedisStreamStorage):
            # one script writes a stream, its dead letters and its retry ledger together
            ledger = stream_name + LEDGER_SUFFIX
            if partitions is None:
                check_same_slot(storage.redis, stream_name, self.dead_letter_stream, ledger)
            note_user(storage.redis, f"processor {consumer_group_name}/{consumer_name}")
        self._storage: ReliableStreamStorageProtocol = (
            storage
            if isinstance(storage, ReliableStreamStorageProtocol)
            else BasicStorageAdapter(storage)
        )
        self._settings = ReadSettings(
            batch_count, poll_interval, claim_min_idle_ms, claim_interval, max_backoff, start_id
        )
        self._outage = Outage(stream_name, self.stats, logger)
        self._runner = EntryRunner(
            stats=self.stats,
            max_concurrency=max_concurrency,
            max_deliveries=max_deliveries,
            limits=entry_limits,
            ordering_key=ordering_key,
        )
        self.partitions = partitions
        """How many partition streams are read (None: the one stream ``stream_name``)."""
        self._partitions: PartitionSet | None = None
        self._single: list[StreamSource] = []
        if partitions is None:
            self._single.append(self._source(self._storage, stream_name))
        else:
            self._partitions = self._partition_set(partitions, lease_ttl, dead_letter_stream)
        self._has_callback = False
        self._running = False

    def _source(
        self, storage: ReliableStreamStorageProtocol, stream_name: str, *, takes_over: bool = False
    ) -> StreamSource:
        dead_letter_stream = (
            self.dead_letter_stream
            if stream_name == self.stream_name
            else stream_name + DEAD_LETTER_SUFFIX
        )
        return StreamSource(
            storage,
            stream_name,
            self.group_name,
            self.consumer_name,
            dead_letter_stream,
            settings=self._settings,
            runner=self._runner,
            stats=self.stats,
            outage=self._outage,
            takes_over=takes_over,
        )

    def _partition_set(
        self, partitions: int, lease_ttl: float, dead_letter_stream: str | None
    ) -> PartitionSet:
        check_partitioned_name(self.stream_name, partitions)
        if dead_letter_stream is not None:
            msg = "with partitions, each partition's dead letters go to <partition>:dead"
            raise ValueError(msg)
        if not isinstance(self.storage, RedisStreamStorage):
            msg = "partitions need a RedisStreamStorage (leases are Lua scripts on Redis)"
            raise TypeError(msg)
        return PartitionSet(
            self.storage.redis,
            self.stream_name,
            self.group_name,
            self.consumer_name,
            partitions=partitions,
            lease_ttl=lease_ttl,
            drain_timeout=self.drain_timeout,
            runner=self._runner,
            outage=self._outage,
            make_source=lambda storage, name: self._source(storage, name, takes_over=True),
        )

    @property
    def _sources(self) -> list[StreamSource]:
        return self._single if self._partitions is None else self._partitions.sources

    @property
    def owned_partitions(self) -> list[int]:
        """The partitions this replica holds the lease of and reads (empty without partitions)."""
        return [] if self._partitions is None else sorted(self._partitions.owned)

    # -- public lifecycle --------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True between ``start_listening()`` and ``stop_listening()``."""
        return self._running

    @property
    def is_healthy(self) -> bool:
        """Running, the group is in place, the last Redis call succeeded and nothing is parked.

        With partitions: every partition held is healthy (holding none, on standby, is too).
        """
        return (
            self._running
            and self._outage.since is None
            and all(source.is_healthy for source in self._sources)
        )

    @property
    def parked(self) -> dict[str, str]:
        """Entries whose dead letter could not be written, with why (a copy).

        They stay pending in Redis and this process leaves them alone, so a letter that
        cannot be written does not loop for ever; fix the cause (the dead-letter stream's key,
        memory) and call ``release_parked()``, or restart the process.
        """
        return {entry: why for source in self._sources for entry, why in source.parked.items()}

    def release_parked(self) -> list[str]:
        """Let the claim sweep try the parked entries again; return their ids."""
        released: list[str] = []
        for source in self._sources:
            released += source.parked
            source.parked.clear()
            source.sweep_soon()
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
        ``BotRedisDispatcher.process_message``) gets the stream the event was read from, so
        retries go back to it. When it returns a report with ``dead_letters`` (as the
        dispatcher does), those failures go to the dead-letter stream.
        """
        self._runner.set_callback(callback)
        self._has_callback = True

    async def start_listening(self) -> None:
        """Start consuming in the background and return at once.

        The group is created (at ``start_id``, with MKSTREAM) by the background task, so an
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
        for source in self._sources:
            source.start()
        if self._partitions is not None:
            self._partitions.start()

    async def stop_listening(self) -> None:
        """Stop reading, let in-flight handlers finish (up to ``drain_timeout``), flush ACKs.

        Returns promptly even while a read is blocked on the server. Entries whose handlers
        did not finish in time, and entries read but not started (waiting for their key or a
        worker), stay pending and are handled after a restart or by another consumer. Idempotent.
        """
        if not self._running:
            return
        self._running = False
        if self._partitions is not None:
            await self._partitions.stop_rebalancing()
        sources = self._sources
        for source in sources:
            await source.stop_reading()
        await self._runner.close(self.drain_timeout)
        for source in sources:
            await source.finish()
        if self._partitions is not None:
            await self._partitions.leave()  # after the drain: the next owners never overlap
        logger.info("stopped consuming %s", self.stream_name)

    async def __aenter__(self) -> RedisStreamProcessor:
        await self.start_listening()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop_listening()
