"""What ``make demo`` shows: the progress bar, the summary and the checks that end it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TextIO

from codex_bot.telegram import TelegramLimits
from example_bot.demo_scenario import SERVER_ERRORS, Scenario
from example_bot.services import EventsReport

BAR_WIDTH = 30


class DemoFailedError(Exception):
    """Something did not arrive in time or arrived wrong; the message says what."""


@dataclass(frozen=True, slots=True)
class Progress:
    """One look at where the events are.

    Attributes:
        pushed: Events the backend pushed so far.
        delivered: Distinct messages Telegram (the stand-in) took.
        duplicates: Messages it took more than once.
        retried: Events arq put back on the stream.
        floods: Requests Telegram answered 429 Too Many Requests.
        dead: Entries in the dead-letter stream.
        report: The group as the first replica sees it (pending, unread entries).
        handled: Events each replica handled.
        running: Replicas whose processor is still running.
        arq_queued: Retries waiting in arq.
        rate: Sends Telegram answered per second while the bulk went out: from the first
            answer to the last one to a private chat of the round-robin.
    """

    pushed: int
    delivered: int
    duplicates: int
    retried: int
    floods: int
    dead: int
    report: EventsReport
    handled: tuple[int, ...]
    running: int
    arq_queued: int
    rate: float

    def outstanding(self, total: int) -> int:
        return total - self.delivered - self.dead

    def settled(self, total: int) -> bool:
        idle = self.report.pending == 0 and not self.report.waiting and self.arq_queued == 0
        return self.pushed == total and self.outstanding(total) == 0 and idle


def answer_rate(arrivals: list[float], until: float) -> float:
    """Answers per second from the first arrival to ``until`` (0 without two of them).

    The busy chat's and the groups' last messages may trail the bulk (a chat's next
    message is booked only once its previous one went out): they do not count.
    """
    counted = [at for at in arrivals if at <= until]
    if len(counted) < 2:
        return 0.0
    span = until - min(counted)
    return (len(counted) - 1) / span if span > 0 else 0.0


def progress_line(
    look: Progress, total: int, elapsed: float, out: TextIO, live: bool, *, final: bool
) -> None:
    """A progress bar of settled events (delivered or dead-lettered), redrawn on a terminal."""
    settled = total - look.outstanding(total)
    filled = BAR_WIDTH * settled // max(total, 1)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    line = (
        f"{elapsed:5.1f}s [{bar}] {settled:4d}/{total}  {look.rate:4.1f} msg/s  "
        f"429s {look.floods}  retried {look.retried}  dead-lettered {look.dead}"
    )
    if live:
        out.write("\r" + line + "\x1b[K" + ("\n" if final else ""))  # K: clear the rest
    else:
        out.write(line + "\n")
    out.flush()


def check(final: Progress, scenario: Scenario) -> None:
    """Raise if anything is left over, doubled, or dead-lettered that should not be.

    Raises:
        DemoFailedError: With every problem found, one after another.
    """
    problems = []
    if final.running:
        problems.append(f"{final.running} processor(s) still running after shutdown")
    if final.outstanding(scenario.events) or final.report.pending or final.arq_queued:
        problems.append("events are left over after shutdown")
    if final.duplicates:
        problems.append(f"{final.duplicates} messages were sent twice")
    if final.dead != scenario.expected_dead():
        problems.append(f"expected {scenario.expected_dead()} dead letters, found {final.dead}")
    if problems:
        raise DemoFailedError("; ".join(problems))


def summary(
    final: Progress,
    scenario: Scenario,
    limits: TelegramLimits,
    reasons: Counter[str],
    seconds: float,
    out: TextIO,
) -> None:
    """The summary block, ending with the one-line result."""
    left = final.outstanding(scenario.events)
    replicas = ", ".join(f"replica {n} {count}" for n, count in enumerate(final.handled, 1))
    out.write(
        f"\nSummary: {scenario.events} notifications through {len(final.handled)} bot replicas "
        "sharing one flood budget in Redis\n"
        f"  to             {scenario.chats} private chats, {scenario.groups} groups "
        f"({scenario.per_group} each) and one busy chat ({scenario.busy})\n"
        f"  delivered      {final.delivered:4d}  at {final.rate:.1f} messages/s while the bulk "
        "went out\n"
        f"                       (Telegram allows {limits.per_second:g}/s, "
        f"{limits.per_chat_per_second:g}/s per chat, {limits.per_group_per_minute}/min per "
        "group)\n"
        f"  429 answered   {final.floods:4d}  (expected 0: every send waited for its turn)\n"
        f"  retried        {final.retried:4d}  (chat {scenario.flaky} answered 502 "
        f"{SERVER_ERRORS} times; arq brought the events back)\n"
        f"  dead-lettered  {final.dead:4d}  in demo_events:dead, with Telegram's reason:\n"
    )
    for reason, count in reasons.most_common():
        out.write(f"                 {count:4d} x {reason}\n")
    out.write(
        f"  pending        {left:4d}  (XPENDING {final.report.pending}, arq queue "
        f"{final.arq_queued}, processors stopped)\n"
        f"  handled by     {replicas}\n"
        f"demo: {scenario.events} events, delivered {final.delivered}, retried "
        f"{final.retried}, dead-lettered {final.dead}, pending {left}, 429s {final.floods}, "
        f"{final.rate:.1f} msg/s, in {seconds:.1f}s\n"
    )
