"""``RedisStreamProcessor``: the consumer-group loop that runs inside the bot process.

One task reads (a blocking XREADGROUP with a timeout), up to ``max_concurrency`` handler
tasks run, events with the same ordering key run one after another in stream order, and
one task acknowledges finished entries in batches. An entry is acknowledged only after its
callback returned, or after it was moved to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codex_bot.redis.codec import attempt_of, decode_fields, entry_id_key, raw_fields
from codex_bot.redis.constants import (
    ATTEMPT_FIELD,
    DEAD_AT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_HANDLER_FIELD,
    DEAD_LETTER_SUFFIX,
    DEAD_REASON_FIELD,
    DEAD_SOURCE_ID_FIELD,
    ORIGIN_FIELD,
    TYPE_FIELD,
)
from codex_bot.redis.context import EventContext, _current
from codex_bot.redis.exceptions import CodexBotError, MalformedEventError
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.types import (
    Entry,
    MessageCallback,
    OrderingKeyFunc,
    ReliableStreamStorageProtocol,
    StreamStorageProtocol,
)
from codex_bot.redis.workers import KeyedWorkers

logger = logging.getLogger(__name__)

_MIN_BACKOFF = 0.05
_OUTAGE_ERRORS = (OSError, RedisConnectionError, RedisTimeoutError)
"""Errors that mean Redis cannot be reached (``BusyLoadingError`` included), not a bug."""
_DELETED = "entry was deleted from the stream before it was handled"
_MAX_READ = 1000
"""Upper bound of one XREADGROUP COUNT while a backlog drains."""
_MAX_LEFT_PENDING = 10_000
"""Failed entries remembered for a lost group; beyond, the claim sweep is their only path."""

# (entry id, raw fields, decoded payload, deliveries)
_Item = tuple[str, Mapping[Any, Any], dict[str, Any], int]


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
        storage: ``RedisStreamStorage`` or any ``StreamStorageProtocol`` implementation.
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
    """

    def __init__(
        self,
        storage: StreamStorageProtocol,
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
        self.max_backoff = max(max_backoff, _MIN_BACKOFF)
        self.stats = ProcessorStats()
        self._reliable = isinstance(storage, ReliableStreamStorageProtocol)
        self._callback: MessageCallback | None = None
        self._pass_stream_name = False
        self._running = False
        self._loop_task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._workers: KeyedWorkers[_Item] = KeyedWorkers(self._handle, max_concurrency)
        self._inflight_ids: set[str] = set()
        self._capacity = asyncio.Event()
        self._ack_buffer: list[str] = []
        self._ack_wakeup = asyncio.Event()
        self._group_ready = False
        self._had_group = False
        self._left_pending: dict[str, None] = {}
        self._restore_due = False
        """Entries whose callback failed, kept pending: restored if their group vanishes."""
        self._last_seen_id: str | None = None
        self._next_sweep = 0.0
        self._read_count = batch_count
        self._outage_since: float | None = None

    # -- public lifecycle --------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True between ``start_listening()`` and ``stop_listening()``."""
        return self._running

    @property
    def is_healthy(self) -> bool:
        """Running, the group is in place and the last Redis call succeeded."""
        return self._running and self._group_ready and self._outage_since is None

    @property
    def in_flight(self) -> int:
        """Entries read and not finished yet (running or waiting for their key)."""
        return len(self._inflight_ids)

    def set_message_callback(self, callback: MessageCallback) -> None:
        """Set the async callable each event goes to.

        A callback that accepts a ``stream_name`` keyword (such as
        ``BotRedisDispatcher.process_message``) gets this processor's stream name, so
        retries go back to the stream the event came from.
        """
        self._callback = callback
        self._pass_stream_name = _accepts_stream_name(callback)

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
        if self._callback is None:
            msg = "call set_message_callback() before start_listening()"
            raise CodexBotError(msg)
        if not self._reliable:
            logger.warning(
                "%s lacks ReliableStreamStorageProtocol: sleep-polling reads, no "
                "max_deliveries, no dead letters",
                type(self.storage).__name__,
            )
        self._running = True
        self._workers = KeyedWorkers(self._handle, self.max_concurrency)
        self._group_ready = False
        self._next_sweep = 0.0
        self._loop_task = asyncio.create_task(self._run(), name=f"codex-read:{self.stream_name}")
        self._ack_task = asyncio.create_task(self._ack_loop(), name=f"codex-ack:{self.stream_name}")
        logger.info("consuming %s as %s/%s", self.stream_name, self.group_name, self.consumer_name)

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
        late = await self._workers.close(self.drain_timeout)
        if late:
            logger.warning(
                "%s handler(s) still running after %.1fs; their entries stay pending",
                late,
                self.drain_timeout,
            )
        for item in self._workers.queued():
            self._finish(item[0])
        if self._ack_task is not None:
            await _cancel(self._ack_task)
            self._ack_task = None
        try:
            await self._flush_acks_once()
        except Exception as exc:  # noqa: BLE001 - unacked entries stay pending, nothing is lost
            logger.warning(
                "could not acknowledge %s entr(ies) of %s at stop; they stay pending: %r",
                len(self._ack_buffer),
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
        backoff = _MIN_BACKOFF
        loop = asyncio.get_running_loop()
        while self._running:
            try:
                if not self._group_ready:
                    await self._prepare_group()
                await self._wait_for_capacity()
                if loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self.claim_interval
                    await self._claim_sweep()
                entries = await self._read(self._next_sweep - loop.time())
                self._back_online()
                backoff = _MIN_BACKOFF
                await self._submit_all(entries, None)
                if entries:
                    # let the workers take the batch before sizing the next read
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the outermost loop must survive anything
                if _group_lost(exc) and self._group_ready:
                    # FLUSHALL, a restart without persistence or XGROUP DESTROY; a blocked
                    # XREADGROUP hears of it as UNBLOCKED rather than NOGROUP
                    logger.warning(
                        "consumer group %s on %s is gone: %s",
                        self.group_name,
                        self.stream_name,
                        exc,
                    )
                    self._group_ready = False
                    continue
                self._went_offline(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _prepare_group(self) -> None:
        """Create the group if missing and pick up this consumer's own pending entries.

        A group that vanished (FLUSHALL, a restart without persistence, XGROUP DESTROY) is
        recreated at the last id this process saw, so what was handled is not replayed and
        what nobody read yet is not skipped.
        """
        if not self._reliable:
            await self.storage.create_group(self.stream_name, self.group_name)
            self._group_ready = True
            return
        storage: Any = self.storage
        start_id = self._last_seen_id or "0"
        if await storage.ensure_group(self.stream_name, self.group_name, start_id):
            if self._had_group:
                self.stats.groups_recreated += 1
                self._restore_due = True
                logger.warning(
                    "recreated consumer group %s on %s at %s",
                    self.group_name,
                    self.stream_name,
                    start_id,
                )
        elif self._last_seen_id is None:
            self._last_seen_id = await storage.group_last_delivered_id(
                self.stream_name, self.group_name
            )
        if self._restore_due:  # kept until it succeeds: a retry finds the group existing
            await self._restore_left_pending(storage)
            self._restore_due = False
        self._back_online()
        self._group_ready = self._had_group = True
        await self._recover_own_pending(storage)

    async def _restore_left_pending(self, storage: Any) -> None:
        """Failed entries were pending in the lost group: put them back, or nobody retries them."""
        if not self._left_pending:
            return
        ids = list(self._left_pending)
        await storage.restore_pending(self.stream_name, self.group_name, self.consumer_name, ids)
        self._left_pending.clear()
        logger.warning(
            "restored %s failed entr(ies) to the recreated group %s on %s",
            len(ids),
            self.group_name,
            self.stream_name,
        )

    async def _recover_own_pending(self, storage: Any) -> None:
        cursor = "0-0"
        while self._running:
            await self._wait_for_capacity()
            entries = await storage.read_own_pending(
                self.stream_name,
                self.group_name,
                self.consumer_name,
                cursor,
                self._free_slots(),
            )
            if not entries:
                return
            cursor = entries[-1][0]
            fresh = [entry for entry in entries if entry[0] not in self._inflight_ids]
            counts = await storage.delivery_counts(
                self.stream_name, self.group_name, [entry_id for entry_id, _ in fresh]
            )
            logger.info("recovering %s pending entr(ies) of %s", len(fresh), self.consumer_name)
            await self._submit_all(fresh, counts)

    async def _claim_sweep(self) -> None:
        """Claim entries idle longer than ``claim_min_idle_ms``, following the cursor."""
        if not self._reliable:
            # the seed's example adapter has no claim_stale_events: then there is no sweep
            claim = getattr(self.storage, "claim_stale_events", None)
            if claim is not None:
                entries = await claim(
                    self.stream_name,
                    self.group_name,
                    self.consumer_name,
                    self.claim_min_idle_ms,
                    self.batch_count,
                )
                await self._submit_all([e for e in entries if e[0] not in self._inflight_ids], None)
            return
        storage: Any = self.storage
        cursor = "0-0"
        while self._running:
            await self._wait_for_capacity()
            page = await storage.claim_stale(
                self.stream_name,
                self.group_name,
                self.consumer_name,
                self.claim_min_idle_ms,
                cursor,
                self._free_slots(),
            )
            for entry_id in page.deleted_ids:
                # Redis >= 7 already dropped it from the PEL; record the loss where it shows
                await self._dead_letter_quietly(entry_id, _letter({}, entry_id, _DELETED, 0))
            fresh = [entry for entry in page.entries if entry[0] not in self._inflight_ids]
            if fresh:
                counts = await storage.delivery_counts(
                    self.stream_name, self.group_name, [entry_id for entry_id, _ in fresh]
                )
                logger.info("claimed %s stale entr(ies) on %s", len(fresh), self.stream_name)
                await self._submit_all(fresh, counts)
            cursor = page.next_cursor
            if cursor in ("0-0", "0"):
                return

    async def _read(self, until_sweep: float) -> Sequence[Entry]:
        count = min(self._read_count, self._free_slots())
        if not self._reliable:
            entries = await self.storage.read_events(
                self.stream_name, self.group_name, self.consumer_name, count
            )
            if not entries:
                await asyncio.sleep(self.poll_interval)
            return entries
        storage: Any = self.storage
        # wake up for the next claim sweep even on a quiet stream
        block_ms = max(int(min(self.poll_interval, until_sweep) * 1000), 1)
        acks: list[str] = []
        if self._read_count > self.batch_count:  # a backlog: the read will not block
            acks, self._ack_buffer = self._ack_buffer, []
        if not acks:
            entries = await storage.read_new(
                self.stream_name, self.group_name, self.consumer_name, count, block_ms
            )
        else:  # what finished since the last read rides along: one round trip, as in the floor
            try:
                entries = await storage.ack_and_read_new(
                    self.stream_name, self.group_name, self.consumer_name, acks, count, block_ms
                )
            except BaseException:
                self._ack_buffer[:0] = acks
                raise
            self.stats.acked += len(acks)
            self._capacity.set()
        # a backlog: read more at once (bounded by free slots); quiet: back to batch_count
        if len(entries) >= count:
            self._read_count = min(max(self._read_count * 2, self.batch_count), _MAX_READ)
        else:
            self._read_count = self.batch_count
        return entries  # type: ignore[no-any-return]

    def _free_slots(self) -> int:
        return max(self.max_concurrency - len(self._inflight_ids), 1)

    async def _wait_for_capacity(self) -> None:
        while len(self._inflight_ids) >= self.max_concurrency or (
            len(self._ack_buffer) >= self.max_concurrency * 10
        ):
            self._capacity.clear()
            await self._capacity.wait()

    # -- dispatching entries -----------------------------------------------------------

    async def _submit_all(
        self, entries: Sequence[Entry], deliveries: Mapping[str, int] | None
    ) -> None:
        if not entries:
            return
        # entries of one read or page come in id order
        last = entries[-1][0]
        if self._last_seen_id is None or entry_id_key(last) > entry_id_key(self._last_seen_id):
            self._last_seen_id = last
        for entry_id, fields in entries:
            count = deliveries.get(entry_id, 1) if deliveries is not None else 1
            admitted = self._admit(entry_id, fields, count)
            if type(admitted) is str:
                letter = _letter(fields, entry_id, admitted, count)
                await self._dead_letter_quietly(entry_id, letter)
            else:
                self._schedule(admitted)  # type: ignore[arg-type]
        self._workers.kick()

    def _admit(self, entry_id: str, fields: Mapping[Any, Any], deliveries: int) -> _Item | str:
        """Decode an entry; or say why it can never be handled (it goes to dead letters)."""
        if not fields:
            return _DELETED
        if deliveries > self.max_deliveries and self._reliable:
            return f"delivered {deliveries} times (max_deliveries={self.max_deliveries})"
        try:
            payload = decode_fields(fields)
        except MalformedEventError as exc:
            return str(exc)
        event_type = payload.get(TYPE_FIELD)
        if event_type and type(event_type) is str:
            return entry_id, fields, payload, deliveries
        return "entry has no 'type' field (a non-empty string)"

    def _schedule(self, item: _Item) -> None:
        key = None
        if self.ordering_key is not None:
            try:
                key = self.ordering_key(item[2])
                hash(key)  # a list or dict as chat_id cannot name a lane
            except Exception:  # a broken key must not stop the loop
                logger.exception("no ordering key for entry %s; running it unordered", item[0])
                key = None
        self._inflight_ids.add(item[0])
        self._workers.submit(item, key)

    async def _handle(self, item: _Item) -> None:
        entry_id, fields, payload, deliveries = item
        # the worker's context: each entry replaces the previous entry's EventContext
        _current.set(self._event_context(entry_id, payload, deliveries))
        callback: Any = self._callback
        try:
            if self._pass_stream_name:
                result = await callback(payload, stream_name=self.stream_name)
            else:
                result = await callback(payload)
            letters = getattr(result, "dead_letters", None)
            if letters:  # the dispatcher already logged why, at ERROR
                await self._dead_letter(
                    entry_id,
                    [_handler_letter(fields, entry_id, letter) for letter in letters],
                    logging.INFO,
                )
            else:
                self._ack_buffer.append(entry_id)
                self._ack_wakeup.set()
            self.stats.handled += 1
        except asyncio.CancelledError:
            raise
        except MalformedEventError as exc:
            await self._dead_letter_quietly(
                entry_id, _letter(fields, entry_id, str(exc), deliveries)
            )
        except Exception as exc:  # noqa: BLE001 - a failed entry stays pending, the loop goes on
            self.stats.failed += 1
            if len(self._left_pending) < _MAX_LEFT_PENDING:
                self._left_pending[entry_id] = None
            logger.warning("entry %s of %s left pending: %s", entry_id, self.stream_name, exc)
        else:
            if self._left_pending:
                self._left_pending.pop(entry_id, None)
        finally:
            self._finish(entry_id)

    def _event_context(
        self, entry_id: str, payload: dict[str, Any], deliveries: int
    ) -> EventContext:
        if ATTEMPT_FIELD not in payload:
            return EventContext(self.stream_name, entry_id, deliveries, 1, entry_id)
        attempt = attempt_of(payload)
        origin = str(payload.get(ORIGIN_FIELD) or entry_id)
        return EventContext(self.stream_name, entry_id, deliveries, attempt, origin)

    def _finish(self, entry_id: str) -> None:
        self._inflight_ids.discard(entry_id)
        self._capacity.set()

    async def _dead_letter(
        self, entry_id: str, letters: list[dict[str, str]], level: int = logging.ERROR
    ) -> None:
        if not self._reliable:
            logger.error(
                "cannot dead-letter %s (%s): storage has no dead_letter(); left pending",
                entry_id,
                letters[0].get(DEAD_REASON_FIELD),
            )
            return
        storage: Any = self.storage
        await storage.dead_letter(
            self.stream_name, self.group_name, entry_id, self.dead_letter_stream, letters
        )
        self.stats.dead_lettered += 1
        if self._left_pending:
            self._left_pending.pop(entry_id, None)
        logger.log(
            level,
            "moved %s of %s to %s: %s",
            entry_id,
            self.stream_name,
            self.dead_letter_stream,
            letters[0].get(DEAD_REASON_FIELD),
        )

    async def _dead_letter_quietly(self, entry_id: str, letter: dict[str, str]) -> None:
        try:
            await self._dead_letter(entry_id, [letter])
        except Exception as exc:  # noqa: BLE001 - stays pending, the claim sweep brings it back
            self.stats.failed += 1
            logger.warning("entry %s of %s left pending: %r", entry_id, self.stream_name, exc)

    # -- acknowledgements --------------------------------------------------------------

    async def _ack_loop(self) -> None:
        """Acknowledge finished entries; those finished during one XACK go in the next."""
        backoff = _MIN_BACKOFF
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            while self._ack_buffer:
                try:
                    await self._flush_acks_once()
                    self._back_online()
                    backoff = _MIN_BACKOFF
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - kept in the buffer, retried
                    self._went_offline(exc)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)

    async def _flush_acks_once(self) -> None:
        ids, self._ack_buffer = self._ack_buffer, []
        if not ids:
            return
        try:
            if self._reliable:
                storage: Any = self.storage
                await storage.ack_events(self.stream_name, self.group_name, ids)
            else:
                for entry_id in ids:
                    await self.storage.ack_event(self.stream_name, self.group_name, entry_id)
        except BaseException:
            self._ack_buffer[:0] = ids
            raise
        self.stats.acked += len(ids)
        self._capacity.set()

    # -- outages -----------------------------------------------------------------------

    def _went_offline(self, exc: BaseException) -> None:
        """Count a failed attempt; log only the first one of an outage."""
        self.stats.errors += 1
        if self._outage_since is not None:
            logger.debug("still failing on %s: %r", self.stream_name, exc)
            return
        self._outage_since = asyncio.get_running_loop().time()
        if isinstance(exc, _OUTAGE_ERRORS):
            logger.warning(
                "Redis unavailable for %s, retrying with backoff: %r", self.stream_name, exc
            )
        else:
            logger.error(
                "error consuming %s, retrying with backoff", self.stream_name, exc_info=exc
            )

    def _back_online(self) -> None:
        if self._outage_since is not None:
            seconds = asyncio.get_running_loop().time() - self._outage_since
            self._outage_since = None
            logger.warning("Redis reachable again for %s after %.1fs", self.stream_name, seconds)


def _accepts_stream_name(callback: MessageCallback) -> bool:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "stream_name" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )


def _group_lost(exc: BaseException) -> bool:
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text


def _letter(fields: Mapping[Any, Any], entry_id: str, reason: str, attempts: int) -> dict[str, str]:
    letter = raw_fields(fields)
    letter[DEAD_REASON_FIELD] = reason
    letter[DEAD_SOURCE_ID_FIELD] = entry_id
    letter[DEAD_ATTEMPTS_FIELD] = str(attempts)
    letter[DEAD_AT_FIELD] = str(int(time.time() * 1000))
    return letter


def _handler_letter(fields: Mapping[Any, Any], entry_id: str, dead: Any) -> dict[str, str]:
    letter = _letter(fields, entry_id, dead.reason, dead.attempts)
    letter[DEAD_HANDLER_FIELD] = dead.handler
    letter[DEAD_ERROR_FIELD] = dead.error
    return letter


async def _cancel(task: asyncio.Task[None]) -> None:
    # asyncio.wait_for before 3.12 (redis-py wraps commands in it when socket_timeout is
    # set) can swallow a cancellation that lands as the command completes: repeat it
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
