"""aiogram handlers of the status feature; ``container`` comes from the dispatcher's data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram.types import Message

if TYPE_CHECKING:
    from example_bot.container import Container
    from example_bot.services import EventsReport

GREETING = "Hi! I deliver notifications and booking confirmations. /status shows how I am doing."


async def start(message: Message) -> None:
    """``/start``: say what the bot does."""
    await message.answer(GREETING)


async def status(message: Message, container: Container) -> None:
    """``/status``: the processor's state and what Redis holds for it."""
    report = await container.events_monitor().report()
    await message.answer(format_report(report))


def format_report(report: EventsReport) -> str:
    """Two lines: state, then counters."""
    if not report.running:
        state = "stopped"
    else:
        state = "running, healthy" if report.healthy else "running, waiting for Redis"
    waiting = "?" if report.waiting is None else str(report.waiting)
    return (
        f"Events: {state}\n"
        f"handled {report.handled}, in flight {report.in_flight}, pending {report.pending}, "
        f"waiting {waiting}, dead letters {report.dead_letters}"
    )
