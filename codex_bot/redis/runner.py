"""``EntryRunner``: runs the callback for each admitted entry and settles it.

An entry the processor read is admitted (decoded, checked) or dead-lettered at once; an
admitted one waits for a worker (behind earlier entries of its ordering key), runs the
callback, and is then acknowledged, dead-lettered for the failures its report names, or left
pending when the callback raised.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import Any

from codex_bot.redis.acks import AckBuffer
from codex_bot.redis.codec import EntryLimits, attempt_of, check_event_type, decode_fields
from codex_bot.redis.constants import ATTEMPT_FIELD, ORIGIN_FIELD
from codex_bot.redis.context import EventContext, _current
from codex_bot.redis.dispatcher import DispatchReport
from codex_bot.redis.exceptions import CodexBotError, MalformedEventError
from codex_bot.redis.group import GroupKeeper
from codex_bot.redis.ledger import LedgerEntry
from codex_bot.redis.letters import DELETED, Letter, handler_letter, letter, reason_of
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.types import (
    Admission,
    DeadLetterInfo,
    Entry,
    HandlingReport,
    InFlight,
    MessageCallback,
    OrderingKeyFunc,
    ReliableStreamStorageProtocol,
    RetryLedgerProtocol,
)
from codex_bot.redis.workers import KeyedWorkers

logger = logging.getLogger("codex_bot.redis.processor")  # one logger for the consumer's story

_FIRST_DELIVERY: Mapping[str, int] = {}
"""Delivery counts of entries read for the first time: none known, each counts as 1."""
MAX_LETTER_ATTEMPTS = 3
"""Times a dead letter may fail to be written before its entry is parked."""
_MAX_REMEMBERED = 10_000


async def _no_callback(payload: dict[str, Any]) -> None:
    msg = "call set_message_callback() before start_listening()"
    raise CodexBotError(msg)


class EntryRunner:
    """Admits entries, runs the callback on up to ``max_concurrency`` workers, settles each.

    Args:
        storage: Where dead letters are written.
        stream_name: The stream the entries come from.
        group_name: The consumer group they are pending in.
        dead_letter_stream: Where entries that can never be handled go.
        stats: The processor's counters.
        acks: Finished entries go here for their XACK.
        group: Told which entries failed (kept pending) and which were settled.
        max_concurrency: Callbacks running at once, and entries in flight before reading pauses.
        max_deliveries: An entry delivered more often is dead-lettered instead.
        limits: Bounds an entry must stay within to be handled.
        ordering_key: ``payload -> key``; entries with the same key run one after another.
        capacity: Set whenever an entry finishes (the ACK buffer sets it as ACKs are sent):
            reading may resume.
        ledger: Where a retry the scheduler returned is written down before the failed entry
            is acknowledged; None when the storage keeps no retry ledger.
    """

    def __init__(
        self,
        storage: ReliableStreamStorageProtocol,
        stream_name: str,
        group_name: str,
        dead_letter_stream: str,
        *,
        stats: ProcessorStats,
        acks: AckBuffer,
        group: GroupKeeper,
        max_concurrency: int,
        max_deliveries: int,
        limits: EntryLimits,
        ordering_key: OrderingKeyFunc | None,
        capacity: asyncio.Event,
        ledger: RetryLedgerProtocol | None = None,
    ) -> None:
        self.storage = storage
        self.stream_name = stream_name
        self.group_name = group_name
        self.dead_letter_stream = dead_letter_stream
        self.stats = stats
        self.acks = acks
        self.group = group
        self.max_concurrency = max_concurrency
        self.max_deliveries = max_deliveries
        self.limits = limits
        self.ordering_key = ordering_key
        self.capacity = capacity
        self.ledger = ledger
        self._callback: MessageCallback = _no_callback
        self._pass_stream_name = False
        self._workers: KeyedWorkers[InFlight] = KeyedWorkers(self._handle, max_concurrency)
        self._inflight_ids: set[str] = set()
        self._letter_failures: dict[str, int] = {}
        self.parked: dict[str, str] = {}
        """Entries whose dead letter could not be written, with why; they stay pending."""

    @property
    def in_flight(self) -> int:
        """Entries admitted and not finished (running, or waiting for their key or a worker)."""
        return len(self._inflight_ids)

    def held(self) -> Collection[str]:
        """The ids of the entries admitted and not finished."""
        return self._inflight_ids

    def skips(self, entry_id: str) -> bool:
        """Whether a claim must leave this entry alone: it is in flight, or parked."""
        return entry_id in self._inflight_ids or entry_id in self.parked

    @property
    def callback(self) -> MessageCallback:
        """The callback each entry goes to."""
        return self._callback

    def set_callback(self, callback: MessageCallback) -> None:
        """Set the callback; one that takes ``stream_name`` gets the stream's name."""
        self._callback = callback
        self._pass_stream_name = _accepts_stream_name(callback)

    def free_slots(self) -> int:
        """How many more entries may be admitted before reading pauses (at least 1)."""
        return max(self.max_concurrency - len(self._inflight_ids), 1)

    async def wait_for_capacity(self) -> None:
        """Return once fewer than ``max_concurrency`` entries are in flight and ACKs flow."""
        while len(self._inflight_ids) >= self.max_concurrency or self.acks.full:
            self.capacity.clear()
            await self.capacity.wait()

    def open(self) -> None:
        """A fresh worker pool, for a start after a stop."""
        self._workers = KeyedWorkers(self._handle, self.max_concurrency)

    async def close(self, drain_timeout: float) -> None:
        """Start nothing new, let running callbacks finish up to ``drain_timeout`` seconds.

        Entries not started, and those still running at the deadline (cancelled), stay pending.
        """
        late = await self._workers.close(drain_timeout)
        if late:
            logger.warning(
                "%s handler(s) still running after %.1fs; their entries stay pending",
                late,
                drain_timeout,
            )
        for item in self._workers.queued():
            self.finish(item.entry_id)

    async def submit_all(
        self, entries: Sequence[Entry], deliveries: Mapping[str, int] = _FIRST_DELIVERY
    ) -> None:
        """Admit each entry and hand it to a worker, or dead-letter it; entries in id order.

        An entry that cannot be admitted, for whatever reason, is dead-lettered alone: the
        rest of the batch goes on.
        """
        if not entries:
            return
        self.group.saw(entries)
        for entry_id, fields in entries:
            count = deliveries.get(entry_id, 1)
            try:
                item, reason = self._admit(entry_id, fields, count)
            except Exception as exc:  # noqa: BLE001 - one hostile entry must not stop the batch
                item, reason = None, f"entry could not be admitted: {exc!r}"
            if item is None:
                letter_ = letter(fields, self.stream_name, entry_id, reason, count)
                await self.dead_letter_quietly(entry_id, letter_)
            else:
                self._inflight_ids.add(entry_id)
                self._workers.submit(item, item.key)
        self._workers.kick()

    def _admit(self, entry_id: str, fields: Mapping[Any, Any], deliveries: int) -> Admission:
        """Decode and key an entry; or say why it can never be handled (it is dead-lettered)."""
        if not fields:
            return None, DELETED
        if deliveries > self.max_deliveries:
            return None, f"delivered {deliveries} times (max_deliveries={self.max_deliveries})"
        try:
            payload = decode_fields(fields, self.limits)
            check_event_type(payload, self.limits)
            key = self._key_of(payload)
        except MalformedEventError as exc:
            return None, str(exc)
        return InFlight(entry_id, fields, payload, deliveries, key), ""

    def _key_of(self, payload: dict[str, Any]) -> Hashable | None:
        if self.ordering_key is None:
            return None
        try:
            key = self.ordering_key(payload)
            hash(key)  # a list or dict as chat_id cannot name a lane
        except Exception as exc:
            msg = f"the ordering key failed: {exc!r}"
            raise MalformedEventError(msg) from exc
        return key  # type: ignore[no-any-return]

    async def _handle(self, item: InFlight) -> None:
        entry_id = item.entry_id
        # the worker's context: each entry replaces the previous entry's EventContext
        _current.set(self._event_context(item))
        callback = self._callback
        try:
            if self._pass_stream_name:
                result = await callback(item.payload, stream_name=self.stream_name)
            else:
                result = await callback(item.payload)
            letters, retry = _outcome(result)
            if retry is not None and self.ledger is not None:
                await self.ledger.record_retry(self.stream_name, retry)
            if letters:  # the dispatcher already logged why, at ERROR
                stream = self.stream_name
                await self._dead_letter(
                    entry_id,
                    [handler_letter(item.fields, stream, entry_id, dead) for dead in letters],
                    logging.INFO,
                )
            else:
                self.acks.add(entry_id)
            self.stats.handled += 1
        except asyncio.CancelledError:
            raise
        except MalformedEventError as exc:
            letter_ = letter(item.fields, self.stream_name, entry_id, str(exc), item.deliveries)
            await self.dead_letter_quietly(entry_id, letter_)
        except Exception as exc:  # noqa: BLE001 - a failed entry stays pending, the loop goes on
            self.stats.failed += 1
            self.group.failed(entry_id)
            logger.warning("entry %s of %s left pending: %s", entry_id, self.stream_name, exc)
        else:
            self.group.settled(entry_id)
        finally:
            self.finish(entry_id)

    def _event_context(self, item: InFlight) -> EventContext:
        entry_id, _, payload, deliveries, _ = item
        if ATTEMPT_FIELD not in payload and ORIGIN_FIELD not in payload:  # a first delivery
            return EventContext(self.stream_name, entry_id, deliveries, 1, entry_id)
        origin = str(payload.get(ORIGIN_FIELD) or entry_id)
        return EventContext(self.stream_name, entry_id, deliveries, attempt_of(payload), origin)

    def finish(self, entry_id: str) -> None:
        """The entry is no longer in flight (settled, or left for a restart to pick up)."""
        self._inflight_ids.discard(entry_id)
        self.capacity.set()

    async def _dead_letter(
        self, entry_id: str, letters: list[Letter], level: int = logging.ERROR
    ) -> None:
        try:
            await self.storage.dead_letter(
                self.stream_name, self.group_name, entry_id, self.dead_letter_stream, letters
            )
        except Exception as exc:
            self._letter_failed(entry_id, letters, exc)
            raise
        if self._letter_failures:
            self._letter_failures.pop(entry_id, None)
        self.stats.dead_lettered += 1
        self.group.settled(entry_id)
        logger.log(
            level,
            "moved %s of %s to %s: %s",
            entry_id,
            self.stream_name,
            self.dead_letter_stream,
            reason_of(letters),
        )

    async def dead_letter_quietly(self, entry_id: str, letter_: Letter) -> None:
        """Dead-letter one entry; if the letter cannot be written it stays pending."""
        try:
            await self._dead_letter(entry_id, [letter_])
        except Exception as exc:  # noqa: BLE001 - stays pending, the claim sweep brings it back
            self.stats.failed += 1
            logger.warning("entry %s of %s left pending: %r", entry_id, self.stream_name, exc)

    def _letter_failed(self, entry_id: str, letters: list[Letter], exc: Exception) -> None:
        """Count a dead letter that could not be written; park the entry after a few."""
        failures = self._letter_failures.pop(entry_id, 0) + 1
        if failures < MAX_LETTER_ATTEMPTS:
            if len(self._letter_failures) >= _MAX_REMEMBERED:
                self._letter_failures.pop(next(iter(self._letter_failures)))
            self._letter_failures[entry_id] = failures
            return
        reason = reason_of(letters)
        self.parked[entry_id] = f"{reason}; the dead letter failed: {exc!r}"
        self.stats.parked += 1
        logger.error(
            "parked %s of %s: its dead letter (%s) could not be written to %s %s times (%r); "
            "it stays pending and is not read again until release_parked() or a restart",
            entry_id,
            self.stream_name,
            reason,
            self.dead_letter_stream,
            failures,
            exc,
        )


def _outcome(result: object) -> tuple[Sequence[DeadLetterInfo], LedgerEntry | None]:
    """The failures a callback's report asks to dead-letter, and the retry it scheduled."""
    if result is None:
        return (), None
    if type(result) is DispatchReport:  # the common case, without a protocol check's cost
        return result.dead_letters, result.retry_job
    if isinstance(result, HandlingReport):
        return result.dead_letters, None
    return (), None


def _accepts_stream_name(callback: MessageCallback) -> bool:
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.name == "stream_name" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters
    )
