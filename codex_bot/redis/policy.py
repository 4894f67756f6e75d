"""Retry policy: which failures are worth another attempt, and how long to wait for it.

The default classifier, :func:`classify_failure`:

| failure | decision |
| --- | --- |
| ``TelegramRetryAfter`` (flood control) | retry after Telegram's ``retry_after``, no attempt used |
| ``TelegramForbiddenError`` (blocked by the user, kicked) | dead letter at once |
| ``TelegramBadRequest`` (chat not found, malformed message) | dead letter at once |
| ``TelegramMigrateToChat`` (group became a supergroup) | dead letter at once |
| ``TelegramEntityTooLarge`` (file over the upload limit) | dead letter at once |
| ``TelegramNetworkError``, ``TelegramServerError``, anything else | backoff |
"""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace

logger = logging.getLogger(__name__)

_JITTER = 0.1
"""Jitter only adds, up to this share of the delay, so no retry comes back early."""
DEFAULT_MAX_FLOOD_DELAY = 6 * 3600.0
"""Seconds of flood-control waits an event may add up before it is dead-lettered."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do with one handler's failure.

    Attributes:
        retry: False to dead-letter at once (the failure can never succeed).
        delay: Seconds to wait before the retry; None follows the dispatcher's backoff.
        reason: Why, for the dead-letter entry and the log.
        uses_attempt: False for flood control: the retry does not count against
            ``max_attempts``; instead, the time spent waiting counts against
            ``max_flood_delay``.
        expected: An outcome a bot meets in normal operation (Telegram's 429, a user who
            blocked the bot, a network blip): logged in one line, without a traceback.
        gave_up: Set by ``RetryPolicy.decide`` when a failure worth retrying is dead-lettered
            because it ran out of attempts or of flood-control time: what the handler was to
            send was never sent, so even an expected failure is logged as a warning.
    """

    retry: bool
    delay: float | None = None
    reason: str = ""
    uses_attempt: bool = True
    expected: bool = False
    gave_up: bool = False


FailureClassifier = Callable[[BaseException], RetryDecision]
"""``classifier(exc) -> RetryDecision``; pass one to ``BotRedisDispatcher(classifier=...)``."""

BACKOFF = RetryDecision(retry=True, reason="retryable error")
"""The decision for errors that may pass: retry after the dispatcher's backoff."""
FLOOD_REASON = "Telegram flood control"


def classify_failure(exc: BaseException) -> RetryDecision:
    """The default classifier: Telegram-aware, everything else follows the backoff.

    - ``TelegramRetryAfter``: retried after Telegram's ``retry_after``, without using an
      attempt (flood control is back-pressure, not failure).
    - ``TelegramForbiddenError`` (blocked by the user, kicked from the chat),
      ``TelegramBadRequest`` (chat not found, a malformed message),
      ``TelegramMigrateToChat`` and ``TelegramEntityTooLarge``: the same request fails the
      same way again, so they are dead-lettered at once.
    - Anything else, ``TelegramNetworkError`` and ``TelegramServerError`` included: backoff.

    Args:
        exc: What the handler raised.

    Returns:
        The decision; ``reason`` says why for the dead-letter entry.
    """
    errors = sys.modules.get("aiogram.exceptions")
    if errors is None:  # aiogram never loaded, so this cannot be one of its errors
        return BACKOFF
    if isinstance(exc, errors.TelegramRetryAfter):
        return RetryDecision(
            True, float(exc.retry_after), FLOOD_REASON, uses_attempt=False, expected=True
        )
    for name, reason in _PERMANENT:
        permanent = getattr(errors, name, None)  # older aiogram 3 releases lack some
        if permanent is not None and isinstance(exc, permanent):
            return RetryDecision(False, None, reason, expected=True)
    if isinstance(exc, errors.TelegramAPIError):  # network, server, ...: nothing to trace
        return replace(BACKOFF, expected=True)
    return BACKOFF


_PERMANENT = (
    ("TelegramForbiddenError", "the bot may not write to this chat"),
    ("TelegramMigrateToChat", "the group became a supergroup with another chat id"),
    ("TelegramBadRequest", "Telegram rejected the request as invalid"),
    ("TelegramEntityTooLarge", "the file is larger than Telegram accepts"),
)
"""aiogram errors that fail the same way on every attempt, with the dead-letter reason."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The dispatcher's retry settings, and the decision they make for one failure.

    Attributes:
        max_attempts: Attempts in all, the first delivery included.
        retry_delay: Seconds before the first retry; retry n waits ``retry_delay * 2**(n-1)``.
        max_retry_delay: Cap of that backoff.
        classifier: ``exc -> RetryDecision``; the default knows aiogram's Telegram errors.
        max_flood_delay: Seconds of flood-control waits (retries that use no attempt) an
            event may add up across its retries before it is dead-lettered; 6 hours.

    Raises:
        ValueError: ``max_attempts`` below 1 or a negative delay.
    """

    max_attempts: int = 5
    retry_delay: float = 60.0
    max_retry_delay: float = 3600.0
    classifier: FailureClassifier = classify_failure
    max_flood_delay: float = DEFAULT_MAX_FLOOD_DELAY

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            msg = "max_attempts counts the first delivery, so it must be at least 1"
            raise ValueError(msg)
        if min(self.retry_delay, self.max_retry_delay, self.max_flood_delay) < 0:
            msg = "retry_delay, max_retry_delay and max_flood_delay must not be negative"
            raise ValueError(msg)

    def decide(
        self, error: BaseException, attempt: int, flood_waited: float = 0.0
    ) -> RetryDecision:
        """What becomes of a failure on ``attempt`` (1 for the first delivery).

        Args:
            error: What the handler raised.
            attempt: The attempt that failed.
            flood_waited: Seconds of flood-control waits the event has added up so far.

        Returns:
            A retry with its delay before jitter (the classifier's, else the backoff), or
            no retry with the reason for the dead letter.
        """
        try:
            decision = self.classifier(error)
        except Exception:
            # a broken classifier must not turn a retryable failure into a lost event
            logger.exception("retry classifier failed on %r; following the backoff", error)
            decision = BACKOFF
        if not decision.retry:
            return replace(decision, reason=decision.reason or "the classifier ruled out a retry")
        delay = decision.delay
        if delay is None:
            delay = backoff_delay(attempt, self.retry_delay, self.max_retry_delay)
        delay = max(delay, 0.0)
        if not decision.uses_attempt:
            if flood_waited + delay > self.max_flood_delay:
                reason = (
                    f"flood control kept it waiting {flood_waited + delay:.0f}s in all "
                    f"(max_flood_delay={self.max_flood_delay:.0f})"
                )
                return replace(decision, retry=False, delay=None, reason=reason, gave_up=True)
        elif attempt >= self.max_attempts:
            reason = f"gave up after {attempt} attempts (max_attempts={self.max_attempts})"
            return replace(decision, retry=False, delay=None, reason=reason, gave_up=True)
        return replace(decision, delay=delay)


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped.

    Args:
        attempt: 1 for the first retry (after the first delivery failed).
        base: The first retry's delay.
        cap: The longest delay.

    Returns:
        The delay before jitter.
    """
    # min() first on the exponent keeps 2**n from overflowing a float after many attempts
    exponent = min(max(attempt - 1, 0), 64)
    return float(min(base * 2**exponent, cap))


def with_jitter(delay: float) -> float:
    """Add up to 10% so that many failures at once do not come back at once."""
    return delay * (1 + random.random() * _JITTER)
