"""``FailureSettler``: what becomes of the handlers that failed on an event.

Each failure is decided by the retry policy: dead-lettered, or retried. The retried ones go
back to the stream together, as one retry of the event that runs only them, after the
longest delay any of them asked for.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from codex_bot.redis.constants import (
    ATTEMPT_FIELD,
    FLOOD_WAITED_FIELD,
    HANDLERS_FIELD,
    ORIGIN_FIELD,
)
from codex_bot.redis.context import current_event
from codex_bot.redis.exceptions import HandlerFailedError, HandlerFailure, RetrySchedulingError
from codex_bot.redis.ledger import LedgerEntry
from codex_bot.redis.policy import RetryDecision, RetryPolicy, with_jitter
from codex_bot.redis.reports import DeadLetter, DispatchReport
from codex_bot.redis.types import Payload, RetrySchedulerProtocol

logger = logging.getLogger("codex_bot.redis.dispatcher")  # one logger for the dispatcher's story


class RetryPlan(NamedTuple):
    """The one retry an event's failures become: which handlers, when, as which attempt."""

    failures: list[HandlerFailure]
    delay: float
    attempt: int
    flood_waited: float


class FailureSettler:
    """Splits an event's failures into dead letters and one retry, and schedules the retry.

    Args:
        policy: Decides each failure.
        scheduler: Takes the retry; None: a failure to retry raises ``HandlerFailedError``.
    """

    def __init__(self, policy: RetryPolicy, scheduler: RetrySchedulerProtocol | None) -> None:
        self.policy = policy
        self.scheduler = scheduler

    async def settle(
        self, report: DispatchReport, payload: Payload, meta: Payload, stream_name: str
    ) -> DispatchReport:
        """``report`` with its dead letters, and its retry once scheduled.

        Raises:
            HandlerFailedError: a failure is to be retried and there is no scheduler.
            RetrySchedulingError: the scheduler could not take the retry.
        """
        dead, plan = self.decide_all(report, flood_waited(meta))
        report = report._replace(dead_letters=report.dead_letters + tuple(dead))
        if plan.failures:
            report = await self.retry(report, payload, meta, stream_name, plan)
        return report

    def decide_all(
        self, report: DispatchReport, flood_waited: float
    ) -> tuple[list[DeadLetter], RetryPlan]:
        """Split the failures into dead letters and one retry that waits the longest delay.

        The retry is the next attempt unless every failure in it was flood control, which
        uses no attempt and adds its wait to the event's flood total instead.
        """
        dead: list[DeadLetter] = []
        retry: list[HandlerFailure] = []
        delay, uses_attempt = 0.0, False
        for failure in report.failed:
            decision = self.policy.decide(failure.error, report.attempt, flood_waited)
            self.log_failure(report, failure, decision)
            if decision.retry:
                retry.append(failure)
                delay = max(delay, decision.delay or 0.0)
                uses_attempt = uses_attempt or decision.uses_attempt
            else:
                dead.append(
                    DeadLetter(
                        handler=failure.handler,
                        reason=decision.reason,
                        error=failure.description,
                        attempts=report.attempt,
                    )
                )
        attempt = report.attempt + 1 if uses_attempt else report.attempt
        waited = flood_waited if uses_attempt else flood_waited + delay
        return dead, RetryPlan(retry, delay, attempt, waited)

    def log_failure(
        self, report: DispatchReport, failure: HandlerFailure, decision: RetryDecision
    ) -> None:
        """One line per failure; a traceback only for what is not a Telegram outcome.

        A 429, a user who blocked the bot or a network blip is part of a bot's day: a
        warning when retried, an info line when dead-lettered at once (the user blocked the
        bot), and a warning when the retries ran out (nothing was sent). Anything else may be
        a bug: its traceback is logged once per event, on the first attempt and when it is
        dead-lettered, as an error.
        """
        attempt, most = report.attempt, self.policy.max_attempts
        if decision.retry:
            trace = failure.error if attempt == 1 and not decision.expected else None
            logger.warning(
                "handler %s failed on %s (attempt %s of %s): %s",
                failure.handler,
                report.event_type,
                attempt,
                most,
                failure.description,
                exc_info=trace,
            )
            return
        if not decision.expected:
            level = logging.ERROR
        else:
            level = logging.WARNING if decision.gave_up else logging.INFO
        logger.log(
            level,
            "handler %s failed on %s (attempt %s of %s), dead-lettering it: %s (%s)",
            failure.handler,
            report.event_type,
            attempt,
            most,
            decision.reason,
            failure.description,
            exc_info=None if decision.expected else failure.error,
        )

    async def retry(
        self,
        report: DispatchReport,
        payload: Payload,
        meta: Payload,
        stream_name: str,
        plan: RetryPlan,
    ) -> DispatchReport:
        """Hand the failed handlers to the retry scheduler as one retry of the event.

        Raises:
            HandlerFailedError: there is no retry scheduler.
            RetrySchedulingError: the scheduler could not take the retry.
        """
        if self.scheduler is None:
            raise HandlerFailedError(report.event_type, plan.failures)
        delay = with_jitter(plan.delay)
        names = [failure.handler for failure in plan.failures]
        event = current_event()
        retry_payload = {
            **payload,
            ATTEMPT_FIELD: plan.attempt,
            HANDLERS_FIELD: names,
            ORIGIN_FIELD: meta.get(ORIGIN_FIELD) or (event.entry_id if event else ""),
        }
        if plan.flood_waited:
            retry_payload[FLOOD_WAITED_FIELD] = round(plan.flood_waited, 3)
        try:
            job = await self.scheduler.schedule_retry(
                stream_name=stream_name, payload=retry_payload, delay=delay
            )
        except Exception as exc:
            msg = f"could not schedule attempt {plan.attempt} of {report.event_type!r}: {exc!r}"
            raise RetrySchedulingError(msg) from exc
        logger.info(
            "attempt %s of %s for %s scheduled in %.2fs",
            plan.attempt,
            report.event_type,
            ", ".join(names),
            delay,
        )
        return report._replace(
            retry_delay=delay,
            retried_handlers=tuple(names),
            retry_job=job if isinstance(job, LedgerEntry) else None,
        )


def flood_waited(meta: Payload) -> float:
    """Seconds of flood-control waits the event added up in earlier retries."""
    try:
        return max(float(meta.get(FLOOD_WAITED_FIELD, 0.0)), 0.0)
    except (TypeError, ValueError):
        return 0.0
