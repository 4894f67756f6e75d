"""``BotRedisDispatcher``: routes events to handlers and decides what a failure becomes."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from codex_bot.redis.codec import split_meta
from codex_bot.redis.constants import (
    ATTEMPT_FIELD,
    DEFAULT_STREAM,
    HANDLERS_FIELD,
    ORIGIN_FIELD,
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
from codex_bot.redis.policy import (
    FailureClassifier,
    backoff_delay,
    classify_failure,
    with_jitter,
)
from codex_bot.redis.router import HandlerEntry, RedisRouter
from codex_bot.redis.types import FilterFunc, HandlerFunc, Payload, RetrySchedulerProtocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A handler failure that will not be retried, for the dead-letter stream."""

    handler: str
    reason: str
    error: str
    attempts: int


@dataclass(frozen=True, slots=True)
class DispatchReport:
    """What ``process_message`` did with one event; the processor acts on ``dead_letters``."""

    event_type: str
    attempt: int = 1
    handled: tuple[str, ...] = ()
    failed: tuple[HandlerFailure, ...] = ()
    retry_delay: float | None = None
    dead_letters: tuple[DeadLetter, ...] = ()
    unknown: bool = False
    retried_handlers: tuple[str, ...] = field(default=())


def handler_name(handler: Callable[..., Any]) -> str:
    """The stable name a retry uses to target a handler: ``module.qualname``."""
    module = getattr(handler, "__module__", None) or "?"
    qualname = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{qualname}"


class BotRedisDispatcher:
    """Routes each event by ``type`` to its handlers as ``handler(payload, container)``.

    Every matching handler runs even when one fails. A failed handler is retried through
    the retry scheduler (only the handlers that failed run again), up to ``max_attempts``
    attempts in all; failures that can never succeed and events out of attempts are
    reported as dead letters, which the processor moves to ``<stream>:dead``.

    Args:
        retry_scheduler: Takes failed events and brings them back later (``ArqRetryScheduler``).
            Without one, a failure raises and the entry stays pending (the seed's behaviour).
        max_attempts: Attempts in all, the first delivery included.
        retry_delay: Seconds before the first retry; retry n waits ``retry_delay * 2**(n-1)``.
        max_retry_delay: Cap of that backoff. Up to 10% jitter is added, never taken away.
        classifier: ``exc -> RetryDecision``; the default knows aiogram's Telegram errors.

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
    ) -> None:
        if max_attempts < 1:
            msg = "max_attempts counts the first delivery, so it must be at least 1"
            raise ValueError(msg)
        self._container: Any = None
        self._ready = False
        self._retry_scheduler = retry_scheduler
        self._handlers: dict[str, list[HandlerEntry]] = {}
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.classifier = classifier
        self.unknown_types: Counter[str] = Counter()
        """Events ACKed without a handler, by type."""

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
        logger.debug("included router for types %s", sorted(router.handlers))

    def on_message(
        self, message_type: str, filter_func: FilterFunc | None = None
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated handler for ``message_type`` on the dispatcher itself."""

        def decorator(handler: HandlerFunc) -> HandlerFunc:
            self._handlers.setdefault(message_type, []).append((handler, filter_func))
            return handler

        return decorator

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
        payload, meta = split_meta(message_data)
        event_type = payload.get(TYPE_FIELD)
        if not event_type or not isinstance(event_type, str):
            msg = "event has no 'type' field"
            raise MalformedEventError(msg)
        entries = self._handlers.get(event_type)
        if not entries:
            self._count_unknown(event_type)
            return DispatchReport(event_type, unknown=True)
        attempt = _attempt(meta)
        targets = meta.get(HANDLERS_FIELD)
        handled, failures = await self._run_handlers(payload, entries, targets)
        report = DispatchReport(event_type, attempt, tuple(handled), tuple(failures))
        if failures:
            report = await self._settle(report, payload, meta, stream_name)
        return report

    async def _run_handlers(
        self, payload: Payload, entries: Sequence[HandlerEntry], targets: Any
    ) -> tuple[list[str], list[HandlerFailure]]:
        handled: list[str] = []
        failures: list[HandlerFailure] = []
        for handler, filter_func in entries:
            name = handler_name(handler)
            if targets is not None and name not in targets:
                continue
            try:
                if filter_func is not None and not filter_func(payload):
                    continue
                await handler(payload, self._container)
            except Exception as exc:  # noqa: BLE001 - one handler's failure must not stop the rest
                failures.append(HandlerFailure(name, exc))
            else:
                handled.append(name)
        return handled, failures

    async def _settle(
        self, report: DispatchReport, payload: Payload, meta: Payload, stream_name: str
    ) -> DispatchReport:
        attempt = report.attempt
        dead: list[DeadLetter] = []
        retry: list[str] = []
        delay = 0.0
        for failure in report.failed:
            decision = self.classifier(failure.error)
            if not decision.retry:
                dead.append(
                    DeadLetter(failure.handler, decision.reason, failure.description, attempt)
                )
            elif attempt >= self.max_attempts:
                reason = f"gave up after {attempt} attempts"
                dead.append(DeadLetter(failure.handler, reason, failure.description, attempt))
            else:
                wait = decision.delay
                if wait is None:
                    wait = backoff_delay(attempt, self.retry_delay, self.max_retry_delay)
                delay = max(delay, wait)
                retry.append(failure.handler)
        for letter in dead:
            logger.error(
                "dead-lettering %s for handler %s after %s attempt(s): %s (%s)",
                report.event_type,
                letter.handler,
                attempt,
                letter.reason,
                letter.error,
            )
        report = replace(report, dead_letters=tuple(dead))
        if not retry:
            return report
        if self._retry_scheduler is None:
            raise HandlerFailedError(report.event_type, report.failed)
        delay = with_jitter(delay)
        await self._schedule(payload, meta, stream_name, retry, attempt + 1, delay)
        return replace(report, retry_delay=delay, retried_handlers=tuple(retry))

    async def _schedule(
        self,
        payload: Payload,
        meta: Payload,
        stream_name: str,
        handlers: list[str],
        attempt: int,
        delay: float,
    ) -> None:
        assert self._retry_scheduler is not None
        event = current_event()
        origin = meta.get(ORIGIN_FIELD) or (event.entry_id if event else "")
        retry_payload = {
            **payload,
            ATTEMPT_FIELD: attempt,
            HANDLERS_FIELD: handlers,
            ORIGIN_FIELD: origin,
        }
        try:
            await self._retry_scheduler.schedule_retry(
                stream_name=stream_name,
                payload=retry_payload,
                delay=delay,  # type: ignore[arg-type]
            )
        except Exception as exc:
            msg = f"could not schedule retry {attempt - 1} of {payload[TYPE_FIELD]!r}: {exc}"
            raise RetrySchedulingError(msg) from exc
        logger.warning(
            "%s failed in %s; attempt %s scheduled in %.1fs",
            payload[TYPE_FIELD],
            ", ".join(handlers),
            attempt,
            delay,
        )

    def _count_unknown(self, event_type: str) -> None:
        if not self.unknown_types[event_type]:
            logger.warning("no handler for event type %r; acknowledging it", event_type)
        self.unknown_types[event_type] += 1


def _attempt(meta: Payload) -> int:
    value = meta.get(ATTEMPT_FIELD, 1)
    try:
        return max(int(value), 1)
    except (TypeError, ValueError):
        return 1
