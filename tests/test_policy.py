"""The retry policy: backoff, jitter, and the Telegram-aware classification."""

from __future__ import annotations

import pytest
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramEntityTooLarge,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.methods import SendMessage

from codex_bot.redis import HandlerFailure, RetryDecision, classify_failure
from codex_bot.redis.exceptions import describe_error
from codex_bot.redis.policy import RetryPolicy, backoff_delay, with_jitter

METHOD = SendMessage(chat_id=1, text="x")


def test_backoff_doubles_from_the_base_and_stops_at_the_cap() -> None:
    assert [backoff_delay(n, 60.0, 3600.0) for n in range(1, 9)] == [
        60.0,
        120.0,
        240.0,
        480.0,
        960.0,
        1920.0,
        3600.0,
        3600.0,
    ]
    assert backoff_delay(10_000, 0.1, 5.0) == 5.0  # no float overflow after many attempts


def test_jitter_only_adds_up_to_ten_percent() -> None:
    samples = [with_jitter(2.0) for _ in range(2000)]
    assert min(samples) >= 2.0
    assert max(samples) <= 2.2
    assert max(samples) > 2.1  # it does spread


@pytest.mark.parametrize(
    "error",
    [
        TelegramForbiddenError(method=METHOD, message="Forbidden: bot was blocked by the user"),
        TelegramForbiddenError(method=METHOD, message="Forbidden: bot was kicked from the chat"),
        TelegramBadRequest(method=METHOD, message="Bad Request: chat not found"),
        TelegramMigrateToChat(method=METHOD, message="Bad Request: migrated", migrate_to_chat_id=2),
        TelegramEntityTooLarge(method=METHOD, message="Request Entity Too Large"),
    ],
    ids=["blocked", "kicked", "chat-not-found", "migrated", "too-large"],
)
def test_errors_that_can_never_succeed_are_not_retried(error: Exception) -> None:
    decision = classify_failure(error)
    assert decision.retry is False
    assert decision.reason


def test_retry_after_waits_what_telegram_asks() -> None:
    error = TelegramRetryAfter(
        method=METHOD, message="Too Many Requests: retry after 7", retry_after=7
    )
    assert classify_failure(error) == RetryDecision(
        True, 7.0, "Telegram flood control", uses_attempt=False, expected=True
    )


@pytest.mark.parametrize(
    "error",
    [
        TelegramNetworkError(method=METHOD, message="HTTP Client says - timeout"),
        TelegramServerError(method=METHOD, message="Internal Server Error"),
        TelegramUnauthorizedError(method=METHOD, message="Unauthorized"),
        TelegramNotFound(method=METHOD, message="Not Found"),
        ConnectionError("backend down"),
        RuntimeError("boom"),
    ],
    ids=["network", "server", "unauthorized", "not-found", "connection", "plain"],
)
def test_everything_else_follows_the_backoff(error: Exception) -> None:
    decision = classify_failure(error)
    assert decision.retry is True
    assert decision.delay is None


def test_description_is_telegrams_own() -> None:
    blocked = TelegramForbiddenError(
        method=METHOD, message="Forbidden: bot was blocked by the user"
    )
    assert (
        describe_error(blocked) == "TelegramForbiddenError: Forbidden: bot was blocked by the user"
    )
    flood = TelegramRetryAfter(
        method=METHOD, message="Too Many Requests: retry after 3", retry_after=3
    )
    assert describe_error(flood) == "TelegramRetryAfter: Too Many Requests: retry after 3"
    assert HandlerFailure("h", ValueError("bad value")).description == "ValueError: bad value"
    assert describe_error(KeyError("chat_id")) == "KeyError: 'chat_id'"
    assert describe_error(RuntimeError()) == "RuntimeError"
    assert len(describe_error(ValueError("x" * 10_000))) == 2000


def test_the_policy_counts_the_first_delivery_and_gives_up_with_the_reason() -> None:
    policy = RetryPolicy(max_attempts=3, retry_delay=0.5, max_retry_delay=1.5)
    assert policy.decide(RuntimeError("x"), 1) == RetryDecision(True, 0.5, "retryable error")
    assert policy.decide(RuntimeError("x"), 2).delay == 1.0
    assert policy.decide(RuntimeError("x"), 3) == RetryDecision(
        False, None, "gave up after 3 attempts (max_attempts=3)", gave_up=True
    )
    flood = TelegramRetryAfter(method=METHOD, message="Too Many Requests", retry_after=9)
    assert policy.decide(flood, 1).delay == 9.0  # Telegram's delay, not the 1.5 s cap
    blocked = TelegramForbiddenError(method=METHOD, message="Forbidden: bot was kicked")
    assert policy.decide(blocked, 1) == RetryDecision(
        False, None, "the bot may not write to this chat", expected=True
    )


def test_flood_control_uses_no_attempt_but_has_a_bound_of_its_own() -> None:
    policy = RetryPolicy(max_attempts=3, max_flood_delay=20.0)
    flood = TelegramRetryAfter(method=METHOD, message="Too Many Requests", retry_after=9)
    assert policy.decide(flood, 3).retry is True  # attempts are spent, flood waits are not
    assert policy.decide(flood, 3, flood_waited=11.0).retry is True  # 20 s in all
    late = policy.decide(flood, 1, flood_waited=11.5)
    assert (late.retry, late.gave_up) == (False, True)
    assert late.reason == "flood control kept it waiting 20s in all (max_flood_delay=20)"
    assert RetryPolicy().max_flood_delay == 6 * 3600  # hours, not minutes


def test_telegram_outcomes_are_expected_and_bugs_are_not() -> None:
    network = TelegramNetworkError(method=METHOD, message="HTTP Client says - timeout")
    assert classify_failure(network).expected is True
    assert classify_failure(RuntimeError("boom")).expected is False


def test_a_custom_classifier_is_guarded() -> None:
    def classifier(exc: BaseException) -> RetryDecision:
        if isinstance(exc, KeyError):
            raise TypeError("a bug in the classifier")
        if isinstance(exc, ValueError):
            return RetryDecision(False)
        return RetryDecision(True, delay=-5)

    policy = RetryPolicy(retry_delay=2.0, classifier=classifier)
    # a classifier that raises falls back to the backoff rather than losing the event
    assert policy.decide(KeyError("k"), 1) == RetryDecision(True, 2.0, "retryable error")
    assert policy.decide(ValueError("v"), 1).reason == "the classifier ruled out a retry"
    assert policy.decide(OSError("o"), 1).delay == 0.0


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(max_retry_delay=-1)
