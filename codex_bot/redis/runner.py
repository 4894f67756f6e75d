"""``EntryRunner``: runs the callback for each admitted entry and settles it.

An entry a source read is admitted (decoded, checked) or dead-lettered at once; an admitted
one waits for a worker (behind earlier entries of its ordering key), runs the callback, and
is then acknowledged, dead-lettered for the failures its report names, or left pending when
the callback raised. One runner serves every stream (partition) a processor consumes, so
``max_concurrency`` bounds them together.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from codex_bot.redis.codec import EntryLimits, attempt_of, bad_event_type, decode_fields
from codex_bot.redis.constants import ATTEMPT_FIELD, ORIGIN_FIELD, TYPE_FIELD
from codex_bot.redis.context import EventContext, _current
from codex_bot.redis.exceptions import CodexBotError, LeaseLostError, MalformedEventError
from codex_bot.redis.ledger import LedgerEntry
from codex_bot.redis.letters import DELETED, Letter, handler_letter, letter, reason_of
from codex_bot.redis.reports import DispatchReport
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.types import (
    DeadLetterInfo,
    Entry,
    HandlingReport,
    MessageCallback,
    OrderingKeyFunc,
    Payload,
)
from codex_bot.redis.workers import KeyedWorkers

if TYPE_CHECKING:
    from codex_bot.redis.source import StreamSource

logger = logging.getLogger("codex_bot.redis.processor")  # one logger for the consumer's story

_new_tuple: Callable[..., Any] = tuple.__new__
"""Builds a NamedTuple without its Python-level ``__new__``: one per event, on the hot path."""
_FIRST_DELIVERY: Mapping[str, int] = {}
"""Delivery counts of entries read for the first time: none known, each counts as 1."""
MAX_LETTER_ATTEMPTS = 3
"""Times a dead letter may fail to be written before its entry is parked."""
_MAX_REMEMBERED = 10_000


class InFlight(NamedTuple):
    """An entry admitted and not finished (a NamedTuple: one is built for every event).

    Attributes:
        entry_id: Its id in the stream.
        fields: The fields as read (``bytes`` or ``str``), for a dead letter.
        payload: The decoded event the callback gets.
        deliveries: How often the group delivered it (1 on a first read).
        key: Its ordering key: entries with the same key run one after another.
        source: The stream (partition) it was read from.
    """

    entry_id: str
    fields: Mapping[Any, Any]
    payload: Payload
    deliveries: int
    key: Hashable | None
    source: StreamSource


Admission = tuple[InFlight | None, str]
"""``(item, reason)``: handle ``item``; or, when it is None, dead-letter the entry for ``reason``.

A plain tuple rather than a NamedTuple: one is built for every entry read.
"""


async def _no_callback(payload: dict[str, Any]) -> None:
    msg = "call set_message_callback() before start_listening()"
    raise CodexBotError(msg)


class EntryRunner:
    """Admits entries, runs the callback on up to ``max_concurrency`` workers, settles each.

    Args:
        stats: The processor's counters.
        max_concurrency: Callbacks running at once, and entries in flight before reading pauses.
        max_deliveries: An entry delivered more often is dead-lettered instead.
        limits: Bounds an entry must stay within to be handled.
        ordering_key: ``payload -> key``; entries with the same key run one after another.
    """

    def __init__(
        self,
        *,
        stats: ProcessorStats,
        max_concurrency: int,
        max_deliveries: int,
        limits: EntryLimits,
        ordering_key: OrderingKeyFunc | None,
    ) -> None:
        self.stats = stats
        self.max_concurrency, self.max_deliveries = max_concurrency, max_deliveries
        self.limits = limits
        self.ordering_key = ordering_key
        self.capacity = asyncio.Event()
        """Set whenever an entry finishes or ACKs were sent: reading may resume."""
        self.in_flight = 0
        """Entries admitted and not finished, over every source."""
        self._callback: MessageCallback = _no_callback
        self._pass_stream_name = False
        self._workers: KeyedWorkers[InFlight] = KeyedWorkers(self._handle, max_concurrency)
        self._letter_failures: dict[tuple[str, str], int] = {}

    @property
    def callback(self) -> MessageCallback:
        """The callback each entry goes to."""
        return self._callback

    def set_callback(self, callback: MessageCallback) -> None:
        """Set the callback; one that takes ``stream_name`` gets the entry's stream name."""
        self._callback = callback
        self._pass_stream_name = _accepts_stream_name(callback)

    def free_slots(self) -> int:
        """How many more entries may be admitted before reading pauses (at least 1)."""
        return max(self.max_concurrency - self.in_flight, 1)

    async def wait_for_capacity(self, source: StreamSource) -> None:
        """Return once fewer than ``max_concurrency`` entries are in flight and ACKs flow."""
        while self.in_flight >= self.max_concurrency or source.acks.full:
            self.capacity.clear()
            await self.capacity.wait()

    async def wait_until_done(self, source: StreamSource, timeout: float) -> bool:  # noqa: ASYNC109 - the drain's bound
        """Wait up to ``timeout`` seconds for ``source``'s entries to finish; whether they did."""
        try:
            async with asyncio.timeout(timeout):
                while source.inflight:
                    self.capacity.clear()
                    await self.capacity.wait()
        except TimeoutError:
            return False
        return True

    def withdraw(self, source: StreamSource) -> int:
        """Take back ``source``'s entries not started yet; they stay pending. How many."""
        items = self._workers.withdraw(lambda item: item.source is source)
        for item in items:
            self.finish(source, item.entry_id)
        return len(items)

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
            self.finish(item.source, item.entry_id)

    async def submit_all(
        self,
        source: StreamSource,
        entries: Sequence[Entry],
        deliveries: Mapping[str, int] = _FIRST_DELIVERY,
    ) -> None:
        """Admit each entry and hand it to a worker, or dead-letter it; entries in id order.

        An entry that cannot be admitted, for whatever reason, is dead-lettered alone: the
        rest of the batch goes on.
        """
        if not entries:
            return
        source.group.saw(entries)
        for entry_id, fields in entries:
            count = deliveries.get(entry_id, 1)
            try:
                item, reason = self._admit(source, entry_id, fields, count)
            except Exception as exc:  # noqa: BLE001 - one hostile entry must not stop the batch
                item, reason = None, f"entry could not be admitted: {exc!r}"
            if item is None:
                letter_ = letter(fields, source.stream_name, entry_id, reason, count)
                await self.dead_letter_quietly(source, entry_id, letter_)
            else:
                source.inflight.add(entry_id)
                self.in_flight += 1
                self._workers.submit(item, item.key)
        self._workers.kick()

    def _admit(
        self, source: StreamSource, entry_id: str, fields: Mapping[Any, Any], deliveries: int
    ) -> Admission:
        """Decode and key an entry; or say why it can never be handled (it is dead-lettered)."""
        if not fields:
            return None, DELETED
        if deliveries > self.max_deliveries:
            return None, f"delivered {deliveries} times (max_deliveries={self.max_deliveries})"
        limits = self.limits
        try:
            payload = decode_fields(fields, limits)
        except MalformedEventError as exc:
            return None, str(exc)
        event_type = payload.get(TYPE_FIELD)
        # one cheap test on the hot path; the reason only for an entry that fails it
        if (
            not event_type
            or type(event_type) is not str
            or len(event_type) > limits.max_type_length
        ):
            return None, bad_event_type(event_type, limits)
        key = None
        if self.ordering_key is not None:
            try:
                key = self.ordering_key(payload)
                hash(key)  # a list or dict as chat_id cannot name a lane
            except Exception as exc:  # noqa: BLE001 - the entry is dead-lettered with the reason
                return None, f"the ordering key failed: {exc!r}"
        return _new_tuple(InFlight, (entry_id, fields, payload, deliveries, key, source)), ""

    async def _handle(self, item: InFlight) -> None:
        entry_id, source = item.entry_id, item.source
        stream = source.stream_name
        # the worker's context: each entry replaces the previous entry's EventContext
        _current.set(_event_context(item))
        callback = self._callback
        try:
            result = await (
                callback(item.payload, stream_name=stream)
                if self._pass_stream_name
                else callback(item.payload)
            )
            letters: Sequence[DeadLetterInfo]
            if type(result) is DispatchReport:  # the common case, read without a call
                letters, retry = result.dead_letters, result.retry_job
            else:
                letters, retry = _outcome(result)
            if retry is not None and source.ledger is not None:
                await source.ledger.record_retry(stream, retry)
            if letters:  # the dispatcher already logged why, at ERROR
                await self._dead_letter(
                    source,
                    entry_id,
                    [handler_letter(item.fields, stream, entry_id, dead) for dead in letters],
                    logging.INFO,
                )
            else:
                source.acks.add(entry_id)
            self.stats.handled += 1
        except asyncio.CancelledError:
            raise
        except MalformedEventError as exc:
            letter_ = letter(item.fields, stream, entry_id, str(exc), item.deliveries)
            await self.dead_letter_quietly(source, entry_id, letter_)
        except Exception as exc:  # noqa: BLE001 - a failed entry stays pending, the loop goes on
            self.stats.failed += 1
            source.group.failed(entry_id)
            logger.warning("entry %s of %s left pending: %s", entry_id, stream, exc)
        else:
            if source.group.left_pending:
                source.group.settled(entry_id)
        finally:
            self.finish(source, entry_id)

    def finish(self, source: StreamSource, entry_id: str) -> None:
        """The entry is no longer in flight (settled, or left for a restart to pick up)."""
        source.inflight.discard(entry_id)
        self.in_flight -= 1
        self.capacity.set()

    async def _dead_letter(
        self,
        source: StreamSource,
        entry_id: str,
        letters: list[Letter],
        level: int = logging.ERROR,
    ) -> None:
        stream, dead_stream = source.stream_name, source.dead_letter_stream
        try:
            await source.storage.dead_letter(
                stream, source.group_name, entry_id, dead_stream, letters
            )
        except LeaseLostError:
            raise  # the letter is not the problem: the partition's new owner writes it
        except Exception as exc:
            self._letter_failed(source, entry_id, letters, exc)
            raise
        if self._letter_failures:
            self._letter_failures.pop((stream, entry_id), None)
        self.stats.dead_lettered += 1
        source.group.settled(entry_id)
        logger.log(
            level, "moved %s of %s to %s: %s", entry_id, stream, dead_stream, reason_of(letters)
        )

    async def dead_letter_quietly(
        self, source: StreamSource, entry_id: str, letter_: Letter
    ) -> None:
        """Dead-letter one entry; if the letter cannot be written it stays pending."""
        try:
            await self._dead_letter(source, entry_id, [letter_])
        except Exception as exc:  # noqa: BLE001 - stays pending, the claim sweep brings it back
            self.stats.failed += 1
            logger.warning("entry %s of %s left pending: %r", entry_id, source.stream_name, exc)

    def _letter_failed(
        self, source: StreamSource, entry_id: str, letters: list[Letter], exc: Exception
    ) -> None:
        """Count a dead letter that could not be written; park the entry after a few."""
        key = (source.stream_name, entry_id)
        failures = self._letter_failures.pop(key, 0) + 1
        if failures < MAX_LETTER_ATTEMPTS:
            if len(self._letter_failures) >= _MAX_REMEMBERED:
                self._letter_failures.pop(next(iter(self._letter_failures)))
            self._letter_failures[key] = failures
            return
        reason = reason_of(letters)
        source.parked[entry_id] = f"{reason}; the dead letter failed: {exc!r}"
        self.stats.parked += 1
        logger.error(
            "parked %s of %s: its dead letter (%s) could not be written to %s %s times (%r); "
            "it stays pending and is not read again until release_parked() or a restart",
            entry_id,
            source.stream_name,
            reason,
            source.dead_letter_stream,
            failures,
            exc,
        )


def _event_context(item: InFlight) -> EventContext:
    entry_id, _, payload, deliveries, _, source = item
    stream = source.stream_name
    if ATTEMPT_FIELD not in payload and ORIGIN_FIELD not in payload:  # a first delivery
        first: EventContext = _new_tuple(EventContext, (stream, entry_id, deliveries, 1, entry_id))
        return first
    origin = str(payload.get(ORIGIN_FIELD) or entry_id)
    return EventContext(stream, entry_id, deliveries, attempt_of(payload), origin)


def _outcome(result: object) -> tuple[Sequence[DeadLetterInfo], LedgerEntry | None]:
    """The failures a callback's report asks to dead-letter, and the retry it scheduled."""
    if result is None:
        return (), None
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
