"""What ``BotRedisDispatcher.process_message`` reports: what it did with one event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from codex_bot.redis.exceptions import HandlerFailure
from codex_bot.redis.ledger import LedgerEntry


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A handler failure that will not be retried, for the dead-letter stream.

    Attributes:
        handler: The handler's name (``module.qualname``); empty when no handler is involved
            (an event of a type nobody handles).
        reason: Why it is not retried ("gave up after 5 attempts (max_attempts=5)", ...).
        error: ``ExceptionType: message``; Telegram's own description for Telegram errors.
        attempts: The attempt that failed, the first delivery counting as 1.
    """

    handler: str
    reason: str
    error: str
    attempts: int


class DispatchReport(NamedTuple):
    """What ``process_message`` did with one event; the processor acts on ``dead_letters``.

    A NamedTuple rather than a frozen dataclass: one is built for every event.

    Attributes:
        event_type: The event's ``type``.
        attempt: This attempt's number, the first delivery counting as 1.
        handled: Names of the handlers that succeeded on this attempt.
        failed: Every handler failure on this attempt.
        retry_delay: Seconds until the scheduled retry; None when nothing is retried.
        dead_letters: Failures that will not be retried.
        unknown: No handler is registered for the type.
        retried_handlers: Names of the handlers the scheduled retry will run.
        retry_job: The scheduled retry as the scheduler returned it (``ArqRetryScheduler``
            returns it for the retry ledger); None otherwise.
    """

    event_type: str
    attempt: int = 1
    handled: tuple[str, ...] = ()
    failed: tuple[HandlerFailure, ...] = ()
    retry_delay: float | None = None
    dead_letters: tuple[DeadLetter, ...] = ()
    unknown: bool = False
    retried_handlers: tuple[str, ...] = ()
    retry_job: LedgerEntry | None = None
