"""``BotRedisDispatcher``: routes events to handlers and decides what a failure becomes."""

from __future__ import annotations

import functools
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Literal

from codex_bot.redis.codec import attempt_of, split_meta
from codex_bot.redis.constants import (
    DEFAULT_STREAM,
    HANDLERS_FIELD,
    META_PREFIX,
    TYPE_FIELD,
)
from codex_bot.redis.context import current_event
from codex_bot.redis.exceptions import (
    DispatcherNotReadyError,
    HandlerFailedError,
    HandlerFailure,
    MalformedEventError,
    RetrySchedulingError,
)
from codex_bot.redis.observer import DispatchObserver, timed_handlers
from codex_bot.redis.policy import (
    DEFAULT_MAX_FLOOD_DELAY,
    FailureClassifier,
    RetryPolicy,
    classify_failure,
)
from codex_bot.redis.reports import DeadLetter, DispatchReport
from codex_bot.redis.router import HandlerEntry, RedisRouter, check_registration
from codex_bot.redis.settle import FailureSettler
from codex_bot.redis.types import FilterFunc, HandlerFunc, Payload, RetrySchedulerProtocol

logger = logging.getLogger(__name__)

_Named = tuple[str, HandlerFunc, FilterFunc | None]
_NO_META: Payload = {}
_NONE: frozenset[str] = frozenset()
_REMEMBERED = 10_000
"""Pending entries whose succeeded handlers are remembered, so a redelivery skips them."""


def handler_name(handler: Callable[..., Any]) -> str:
    """The stable name a retry uses to target a handler: ``module.qualname``.

    A ``functools.partial`` is named after its function, a callable object after its class,
    so the name is the same in every bot process and after a restart.
    """
    target: Any = handler
    while isinstance(target, functools.partial):
        target = target.func
    qualname = getattr(target, "__qualname__", None)
    module = getattr(target, "__module__", None)
    if not isinstance(qualname, str):
        qualname = type(target).__qualname__
        module = type(target).__module__
    return f"{module or '?'}.{qualname}"


class BotRedisDispatcher:
    """Routes each event by ``type`` to its handlers as ``handler(payload, container)``.

    Every matching handler runs even when one fails. A failed handler is retried through
    the retry scheduler (only the handlers that failed run again), up to ``max_attempts``
    attempts in all; failures that can never succeed and events out of attempts are
    reported as dead letters, which the processor moves to ``<stream>:dead``. When an
    entry is left pending instead (no retry scheduler, or it could not be reached), this
    process remembers which of its handlers succeeded and skips them when it comes back.

    Args:
        retry_scheduler: Takes failed events and brings them back later (``ArqRetryScheduler``).
            Without one, a failure raises and the entry stays pending (as in codex-bot 0.4.0).
        max_attempts: Attempts in all, the first delivery included.
        retry_delay: Seconds before the first retry; retry n waits ``retry_delay * 2**(n-1)``.
        max_retry_delay: Cap of that backoff. Up to 10% jitter is added, never taken away.
        classifier: ``exc -> RetryDecision``; the default knows aiogram's Telegram errors.
        max_flood_delay: Telegram's flood control (429 ``retry_after``) is retried without
            using an attempt; an event is dead-lettered only once its flood waits add up to
            more than this many seconds (6 hours).
        unknown_types: What becomes of an event no handler is registered for: ``"dead"``
            (the default) reports it as a dead letter, "no handler for type ...", so it can
            be replayed once a deploy brings its handler; ``"ack"`` only counts and logs it.

    Raises:
        ValueError: ``unknown_types`` is neither ``"dead"`` nor ``"ack"``.

    Example:
        ```python
        dispatcher = BotRedisDispatcher()

        @dispatcher.on_message("booking.confirmed")
        async def on_booking(payload: dict, container) -> None:
            await container.bot().send_message(payload["chat_id"], "Confirmed")

        dispatcher.include_router(notifications_redis_router)
        dispatcher.setup(container=container)
        await dispatcher.process_message({"type": "booking.confirmed", "chat_id": 42})
        ```
    """

    def __init__(
        self,
        retry_scheduler: RetrySchedulerProtocol | None = None,
        *,
        max_attempts: int = 5,
        retry_delay: float = 60.0,
        max_retry_delay: float = 3600.0,
        classifier: FailureClassifier = classify_failure,
        unknown_types: Literal["dead", "ack"] = "dead",
        max_flood_delay: float = DEFAULT_MAX_FLOOD_DELAY,
    ) -> None:
        if unknown_types not in ("dead", "ack"):
            msg = f"unknown_types must be 'dead' or 'ack', not {unknown_types!r}"
            raise ValueError(msg)
        self.policy = RetryPolicy(
            max_attempts, retry_delay, max_retry_delay, classifier, max_flood_delay
        )
        """The retry settings, read-only."""
        self.unknown_type_policy = unknown_types
        """``"dead"`` or ``"ack"``: what becomes of an event no handler is registered for."""
        self._container: Any = None
        self._ready = False
        self._failures = FailureSettler(self.policy, retry_scheduler)
        self._handlers: dict[str, list[HandlerEntry]] = {}
        self.unknown_types: Counter[str] = Counter()
        """Events no handler was registered for, by type (dead-lettered or acknowledged)."""
        self._successes = _Successes(_REMEMBERED)
        self._named: dict[str, list[_Named]] = {}
        """Handlers with their retry names, by type; rebuilt when a handler is added."""
        self._observers: list[DispatchObserver] = []

    @property
    def is_ready(self) -> bool:
        """Whether ``setup(container)`` was called: events can be processed."""
        return self._ready

    @property
    def container(self) -> Any:
        """The container handlers receive; None before ``setup()``."""
        return self._container

    def setup(self, container: Any) -> None:
        """Set the dependency-injector container handlers receive; required before processing.

        Args:
            container: The project's container; handlers take ``container.bot()`` from it.
        """
        self._container = container
        self._ready = True

    def include_router(self, router: RedisRouter) -> None:
        """Add a feature router's handlers after those already registered."""
        for message_type, entries in router.handlers.items():
            self._handlers.setdefault(message_type, []).extend(entries)
        self._named.clear()
        logger.debug("included router for types %s", sorted(router.handlers))

    def on_message(
        self, message_type: str, filter_func: FilterFunc | None = None
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated handler for ``message_type`` on the dispatcher itself.

        Raises:
            TypeError: ``message_type`` is not a string, or ``filter_func`` is an
                ``async def``; (from the decorator) the handler is not an ``async def``
                taking ``(payload, container)``.
            ValueError: ``message_type`` is empty.
        """
        check_registration(message_type, filter_func, "dispatcher.on_message")

        def decorator(handler: HandlerFunc) -> HandlerFunc:
            own = RedisRouter()
            own.message(message_type, filter_func)(handler)
            self.include_router(own)
            return handler

        return decorator

    def add_observer(self, observer: DispatchObserver) -> None:
        """Tell ``observer`` what becomes of every event, and time handlers it asks to time.

        ``codex_bot.metrics.instrument`` adds one; without observers an event costs one
        extra truthiness check.
        """
        self._observers.append(observer)
        self._named.clear()  # handlers are wrapped for timing when their type next comes

    def handles(self, message_type: str) -> bool:
        """Whether any handler is registered for ``message_type``."""
        return message_type in self._handlers

    async def process_message(
        self, message_data: dict[str, Any], stream_name: str = DEFAULT_STREAM
    ) -> DispatchReport:
        """Run every matching handler for one event and decide what each failure becomes.

        Args:
            message_data: The event; ``type`` is required. ``codex.`` retry metadata, if
                present, is used and not passed to handlers.
            stream_name: The stream the event came from; a retry goes back to it.

        Returns:
            What happened; ``dead_letters`` lists failures that will not be retried.

        Raises:
            DispatcherNotReadyError: ``setup()`` was not called.
            MalformedEventError: the event has no ``type``.
            HandlerFailedError: handlers failed and there is no retry scheduler.
            RetrySchedulingError: the retry scheduler could not take the event.
        """
        if not self._ready:
            msg = "BotRedisDispatcher.setup(container) must be called before processing events"
            raise DispatcherNotReadyError(msg)
        # the common event carries no codex. metadata: skip splitting it off
        payload, meta = message_data, _NO_META
        for field_name in message_data:
            if field_name.startswith(META_PREFIX):
                payload, meta = split_meta(message_data)
                break
        event_type = payload.get(TYPE_FIELD)
        if not event_type or type(event_type) is not str:
            msg = "event has no 'type' field"
            raise MalformedEventError(msg)
        targets = _targets(meta) if meta else None
        named = self._named.get(event_type)
        if named is None:
            named = self._name_handlers(event_type)
        attempt = attempt_of(meta) if meta else 1
        if not named and targets is None:
            unknown = self._unknown(event_type, attempt)
            self._notify(unknown, stream_name)
            return unknown
        # a redelivered entry skips the handlers that already succeeded on it
        key = _entry_key(stream_name) if self._successes or meta else None
        done = self._successes.get(key, _NONE) if key else _NONE
        handled, failures = await self._run_handlers(payload, named, targets, done)
        # positional, the fields in order: one report per event, on the hot path
        report = DispatchReport(
            event_type,
            attempt,
            tuple(handled),
            tuple(failures),
            None,
            _missing(targets, named, attempt) if targets is not None else (),
        )
        if not failures:
            self._successes.forget(key)
            if self._observers:
                for observer in self._observers:
                    observer.dispatched(report, stream_name)
            return report
        settled = report
        try:
            settled = await self._settle(report, payload, meta, stream_name, done)
        finally:
            # when it raised, the report before settling: failed, neither retried nor dead
            self._notify(settled, stream_name)
        return settled

    def _notify(self, report: DispatchReport, stream_name: str) -> None:
        for observer in self._observers:
            observer.dispatched(report, stream_name)

    def _name_handlers(self, event_type: str) -> list[_Named]:
        named = _named(self._handlers.get(event_type, ()))
        if self._observers:
            named = timed_handlers(event_type, named, self._observers)
        self._named[event_type] = named
        return named

    async def _run_handlers(
        self,
        payload: Payload,
        named: Sequence[_Named],
        targets: frozenset[str] | None,
        done: frozenset[str],
    ) -> tuple[list[str], list[HandlerFailure]]:
        handled: list[str] = []
        failures: list[HandlerFailure] = []
        for name, handler, filter_func in named:
            if name in done or (targets is not None and name not in targets):
                continue
            try:
                if filter_func is not None and not filter_func(payload):
                    continue
                # a copy, so a handler that pops a key changes neither the next one nor a retry
                await handler(dict(payload), self._container)
            except Exception as exc:  # noqa: BLE001 - one handler's failure must not stop the rest
                failures.append(HandlerFailure(name, exc))
            else:
                handled.append(name)
        return handled, failures

    async def _settle(
        self,
        report: DispatchReport,
        payload: Payload,
        meta: Payload,
        stream_name: str,
        done: frozenset[str],
    ) -> DispatchReport:
        """Dead-letter what cannot be retried, hand the rest to one retry; remember successes.

        When the entry comes back (nothing took the retry over, or its dead letter could not
        be written), the handlers that succeeded or were handed to a retry are not run again.
        """
        key = _entry_key(stream_name)
        settled = done.union(report.handled)
        try:
            report = await self._failures.settle(report, payload, meta, stream_name)
        except (HandlerFailedError, RetrySchedulingError):
            self._successes.remember(key, settled)
            raise
        if report.dead_letters:
            self._successes.remember(key, settled.union(report.retried_handlers))
        else:
            self._successes.forget(key)
        return report

    def _unknown(self, event_type: str, attempt: int) -> DispatchReport:
        first = not self.unknown_types[event_type]
        self.unknown_types[event_type] += 1
        if self.unknown_type_policy == "ack":
            if first:
                logger.warning("no handler for event type %r; acknowledging it", event_type)
            return DispatchReport(event_type=event_type, attempt=attempt, unknown=True)
        if first:
            logger.warning("no handler for event type %r; dead-lettering it", event_type)
        letter = DeadLetter(
            handler="", reason=f"no handler for type {event_type!r}", error="", attempts=attempt
        )
        return DispatchReport(
            event_type=event_type, attempt=attempt, dead_letters=(letter,), unknown=True
        )


class _Successes(OrderedDict[tuple[str, str], frozenset[str]]):
    """Handlers that succeeded on entries left pending, so a redelivery does not run them twice.

    Keyed by ``(stream, entry id)``; the oldest entries are forgotten beyond ``size``. A dict
    itself, so "anything remembered?" and the lookup on every event cost next to nothing.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self._size = size

    def remember(self, key: tuple[str, str] | None, names: frozenset[str]) -> None:
        """Remember ``names`` for the entry until it is settled."""
        if key is None or not names:
            return
        self[key] = names
        self.move_to_end(key)
        while len(self) > self._size:
            self.popitem(last=False)

    def forget(self, key: tuple[str, str] | None) -> None:
        """The entry is settled: nothing to skip when it comes back."""
        if key is not None:
            self.pop(key, None)


def _targets(meta: Payload) -> frozenset[str] | None:
    """The handler names a retry targets, or None for every matching handler."""
    value = meta.get(HANDLERS_FIELD)
    if value is None:
        return None
    if isinstance(value, str):
        return frozenset((value,))
    if isinstance(value, list) and all(isinstance(name, str) for name in value):
        return frozenset(value)
    logger.warning("ignoring malformed %s=%r; running every handler", HANDLERS_FIELD, value)
    return None


def _named(entries: Sequence[HandlerEntry]) -> list[_Named]:
    """Handlers with the names retries target; a repeated name gets ``#2``, ``#3``..."""
    seen: Counter[str] = Counter()
    named: list[_Named] = []
    for handler, filter_func in entries:
        name = handler_name(handler)
        seen[name] += 1
        if seen[name] > 1:
            name = f"{name}#{seen[name]}"
        named.append((name, handler, filter_func))
    return named


def _missing(
    targets: frozenset[str], named: Sequence[_Named], attempt: int
) -> tuple[DeadLetter, ...]:
    """Dead letters for retry targets no longer registered (renamed or removed by a deploy)."""
    known = {name for name, _, _ in named}
    reason = "the retry targets a handler that is no longer registered for this type"
    return tuple(DeadLetter(name, reason, "", attempt) for name in sorted(targets - known))


def _entry_key(stream_name: str) -> tuple[str, str] | None:
    event = current_event()
    if event is None or event.stream_name != stream_name:
        return None
    return event.stream_name, event.entry_id
