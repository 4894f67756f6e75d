"""Retry policy: which failures are worth another attempt, and how long to wait for it."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

_JITTER = 0.1
"""Jitter only adds, up to this share of the delay, so no retry comes back early."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What to do with one handler's failure.

    Attributes:
        retry: False to dead-letter at once (the failure can never succeed).
        delay: Seconds to wait before the retry; None follows the dispatcher's backoff.
        reason: Why, for the dead-letter entry and the log.
    """

    retry: bool
    delay: float | None = None
    reason: str = ""


FailureClassifier = Callable[[BaseException], RetryDecision]
"""``classifier(exc) -> RetryDecision``; pass one to ``BotRedisDispatcher(classifier=...)``."""

BACKOFF = RetryDecision(retry=True)


def classify_failure(exc: BaseException) -> RetryDecision:
    """The default classifier: Telegram-aware, everything else follows the backoff.

    - ``TelegramRetryAfter``: retried after Telegram's ``retry_after``.
    - ``TelegramForbiddenError`` (blocked by the user, kicked from the chat) and
      ``TelegramBadRequest`` (chat not found, a malformed message: the same request fails
      the same way again): never retried.
    - Anything else, ``TelegramNetworkError`` and ``TelegramServerError`` included: backoff.
    """
    errors = sys.modules.get("aiogram.exceptions")
    if errors is None:  # aiogram never loaded, so this cannot be one of its errors
        return BACKOFF
    if isinstance(exc, errors.TelegramRetryAfter):
        return RetryDecision(True, float(exc.retry_after), "Telegram asked to retry later")
    if isinstance(exc, errors.TelegramForbiddenError):
        return RetryDecision(False, None, "Telegram refused: the bot cannot write to this chat")
    if isinstance(exc, errors.TelegramBadRequest):
        return RetryDecision(False, None, "Telegram rejected the request as invalid")
    return BACKOFF


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped."""
    return float(min(base * 2 ** (attempt - 1), cap))


def with_jitter(delay: float) -> float:
    """Add up to 10% so that many failures at once do not come back at once."""
    return delay * (1 + random.random() * _JITTER)
