"""``codex-bot dead``: list, show, replay and purge dead letters."""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from codex_bot.cli.base import Ops, Target, run, target_of, target_options
from codex_bot.cli.params import time_option
from codex_bot.cli.render import cut, echo_json, plural, table, timestamp
from codex_bot.ops import (
    AmbiguousLetterError,
    DeadLetterEntry,
    DeadLetterFilter,
    OpsError,
    ReplayedLetter,
    ReplayResult,
    replayed_fields,
    text_fields,
)
from codex_bot.redis.constants import DEAD_LETTER_SUFFIX

F = TypeVar("F", bound=Callable[..., Any])

LIST_LIMIT = 50
"""``dead list`` shows this many letters unless ``--limit`` says otherwise."""

_ENTRY_ID = re.compile(r"[0-9]+(?:-[0-9]+)?")
"""A dead letter's id as ``dead show`` takes it: ``<ms>-<seq>``, or ``<ms>``."""


def filter_options(func: F) -> F:
    """Add the letter filters ``--type``, ``--reason``, ``--handler``, ``--since``, ``--until``."""
    options = [
        click.option("--type", "event_type", help="Only events of this type."),
        click.option("--reason", help="Only letters whose reason contains this text."),
        click.option("--handler", help="Only letters of this failed handler (or its tail)."),
        click.option(
            "--since",
            callback=time_option,
            help="Written at or after: 2024-06-10T12:00 (UTC), 2h (ago), or an entry id.",
        ),
        click.option("--until", callback=time_option, help="Written at or before (same forms)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def change_options(func: F) -> F:
    """Add the filters, ``--limit`` and ``--yes``: the options of a command that changes letters."""
    func = click.option("--yes", is_flag=True, help="Do not ask for confirmation.")(func)
    func = click.option("--limit", type=click.IntRange(1), help="At most this many letters.")(func)
    return filter_options(func)


def filter_of(options: dict[str, Any]) -> DeadLetterFilter:
    """Take the filter options out of a command's keyword arguments."""
    return DeadLetterFilter(
        event_type=options.pop("event_type"),
        reason=options.pop("reason"),
        handler=options.pop("handler"),
        since_ms=options.pop("since"),
        until_ms=options.pop("until"),
    )


@click.group()
def dead() -> None:
    """Dead letters: events parked in <stream>:dead."""


@dead.command("list")
@target_options
@filter_options
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=LIST_LIMIT,
    show_default=True,
    help="At most this many.",
)
def list_letters(limit: int, **options: Any) -> None:
    """Dead letters, oldest first: time, type, handler, attempts, reason, error."""
    target, where = target_of(options), filter_of(options)
    letters = run(target, lambda ops: _letters(ops, where, limit))
    if target.as_json:
        echo_json(letters)
        return
    if not letters:
        click.echo("no dead letters match")
        return
    rows: list[tuple[Any, ...]] = [
        (
            letter.id,
            timestamp(letter.at_ms),
            letter.event_type or "-",
            letter.handler or "-",
            "-" if letter.attempts is None else letter.attempts,
            letter.source_id or "-",
            letter.reason,
            letter.error or "-",
        )
        for letter in letters
    ]
    headers: tuple[str, ...] = ("ID", "TIME (UTC)", "TYPE", "HANDLER", "ATT", "SOURCE ID")
    headers += ("REASON", "ERROR")
    if target.partitions is not None:  # which partition each letter came from
        headers = ("PARTITION", *headers)
        rows = [(letter.source_stream, *row) for letter, row in zip(letters, rows, strict=True)]
    click.echo(table(headers, rows))


async def _letters(
    ops: Ops, where: DeadLetterFilter, limit: int | None
) -> tuple[DeadLetterEntry, ...]:
    await _check_stream(ops)
    return await ops.dead_letters(where, limit=limit)


async def _check_stream(ops: Ops) -> None:
    # an unknown stream is an error; a stream without dead letters simply has none
    if await ops.dead.count() == 0:
        await ops.group_names()


async def _letter(ops: Ops, letter_id: str) -> DeadLetterEntry:
    try:
        letter = await ops.dead_letter(letter_id)
    except AmbiguousLetterError as exc:
        first = exc.dead_streams[0].removesuffix(DEAD_LETTER_SUFFIX)
        msg = f"{exc}: name its partition, e.g. --stream '{first}' without --partitions"
        raise OpsError(msg) from None
    if letter is None:
        await _check_stream(ops)
        msg = f"no dead letter {letter_id} in {ops.dead_letter_stream}"
        raise OpsError(msg)
    return letter


@dead.command()
@target_options
@click.argument("letter_id")
def show(letter_id: str, **options: Any) -> None:
    """One dead letter, every field (bytes that are not UTF-8 as \\xNN escapes)."""
    target = target_of(options)
    if not _ENTRY_ID.fullmatch(letter_id):
        msg = f"{letter_id!r} is not a stream entry id (like 1700000000000-0)"
        raise target.fail(msg)
    letter = run(target, lambda ops: _letter(ops, letter_id))
    if target.as_json:
        echo_json(letter)
        return
    facts = [
        ("letter", f"{letter.id} in {letter.dead_stream}"),
        ("stream", letter.source_stream),
        ("time", f"{timestamp(letter.at_ms)} UTC"),
        ("type", letter.event_type or "-"),
        ("reason", letter.reason),
        ("handler", letter.handler or "- (not a handler failure)"),
        ("error", letter.error or "-"),
        ("source id", letter.source_id or "-"),
        ("origin id", letter.origin_id or "-"),
        ("attempts", "-" if letter.attempts is None else str(letter.attempts)),
    ]
    for name, value in facts:
        click.echo(f"{name:<10} {value}")
    click.echo("fields:")
    for name, value in text_fields(letter).items():
        click.echo(f"  {name} = {value}")


@dead.command()
@target_options
@change_options
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; change nothing.")
@click.option(
    "--rate", type=click.FloatRange(0, min_open=True), help="At most N letters per second."
)
def replay(limit: int | None, dry_run: bool, rate: float | None, yes: bool, **options: Any) -> None:
    """Put dead letters back on their stream, for the handler that failed.

    Each letter is added to its stream and deleted from the dead-letter stream in one
    atomic step, so a replay that is interrupted can simply be run again.
    """
    target, where = target_of(options), filter_of(options)
    if dry_run:
        _show_plan(target, run(target, lambda ops: _letters(ops, where, limit)))
        return
    survey = run(target, lambda ops: _survey(ops, where, limit))
    if not survey.count:
        _say(target, "no dead letters match", {"replayed": [], "skipped": []})
        return
    if not yes:
        streams = ", ".join(sorted(survey.streams))
        click.confirm(
            f"Replay {plural(survey.count, 'dead letter')} to {streams}?", abort=True, err=True
        )
    confirmed = dataclasses.replace(where, last_id=survey.last_id)
    moved: list[ReplayedLetter] = []
    try:
        result = run(target, lambda ops: _replay(ops, target, confirmed, survey.count, rate, moved))
    except KeyboardInterrupt:
        done = sum(letter.entry_id is not None for letter in moved)
        click.echo(
            f"interrupted: {done} of {plural(survey.count, 'dead letter')} replayed; run the "
            "same command again for the rest (no letter is replayed twice)",
            err=True,
        )
        raise click.exceptions.Exit(130) from None
    if target.as_json:
        echo_json(result)
        return
    gone = f" ({len(result.skipped)} already gone)" if result.skipped else ""
    click.echo(f"replayed {plural(len(result.replayed), 'dead letter')}{gone}")


@dataclasses.dataclass(frozen=True, slots=True)
class _Survey:
    """The letters a replay or purge will touch, counted before asking for confirmation."""

    count: int
    last_id: str | None
    streams: frozenset[str]
    dead_stream: str


async def _survey(ops: Ops, where: DeadLetterFilter, limit: int | None) -> _Survey:
    await _check_stream(ops)
    count, last_id, streams = 0, None, set()
    async for letter in ops.dead.iterate(where, limit):
        count, last_id = count + 1, letter.id
        streams.add(letter.source_stream)
    return _Survey(count, last_id, frozenset(streams), ops.dead_letter_stream)


def _show_plan(target: Target, letters: tuple[DeadLetterEntry, ...]) -> None:
    if target.as_json:
        plan = [
            {
                "dead_id": letter.id,
                "stream": letter.source_stream,
                "fields": replayed_fields(letter),
            }
            for letter in letters
        ]
        echo_json(plan)
        return
    rows = [
        (letter.id, letter.source_stream, letter.event_type or "-", letter.handler or "(all)")
        for letter in letters
    ]
    click.echo(table(("ID", "TO STREAM", "TYPE", "FOR HANDLER"), rows))
    click.echo(f"would replay {plural(len(letters), 'dead letter')} (dry run: nothing changed)")


async def _replay(
    ops: Ops,
    target: Target,
    where: DeadLetterFilter,
    count: int,
    rate: float | None,
    moved: list[ReplayedLetter],
) -> ReplayResult:
    """Replay, appending each letter to ``moved`` as it goes (for a report if interrupted)."""
    if target.as_json:
        return await ops.replay(where, limit=count, rate=rate, on_replayed=moved.append)
    if count <= shutil.get_terminal_size().lines:

        def echo(done: ReplayedLetter) -> None:
            moved.append(done)
            _echo_replayed(done)

        return await ops.replay(where, limit=count, rate=rate, on_replayed=echo)
    with click.progressbar(length=count, label="replaying", file=sys.stderr) as bar:

        def advance(done: ReplayedLetter) -> None:
            moved.append(done)
            bar.update(1)

        return await ops.replay(where, limit=count, rate=rate, on_replayed=advance)


def _echo_replayed(done: ReplayedLetter) -> None:
    if done.entry_id is None:
        click.echo(f"{done.dead_id}: already gone")
        return
    handler = f" for {cut(done.handler)}" if done.handler else ""
    click.echo(f"{done.dead_id} -> {done.stream} {done.entry_id} ({done.event_type}){handler}")


@dead.command()
@target_options
@change_options
def purge(limit: int | None, yes: bool, **options: Any) -> None:
    """Delete dead letters for good."""
    target, where = target_of(options), filter_of(options)
    survey = run(target, lambda ops: _survey(ops, where, limit))
    if not survey.count:
        _say(target, "no dead letters match", {"deleted": 0})
        return
    if not yes:
        question = f"Delete {plural(survey.count, 'dead letter')} from {survey.dead_stream}?"
        click.confirm(question, abort=True, err=True)
    confirmed = dataclasses.replace(where, last_id=survey.last_id)
    deleted = run(target, lambda ops: ops.purge(confirmed, limit=survey.count))
    _say(target, f"deleted {plural(deleted, 'dead letter')}", {"deleted": deleted})


def _say(target: Target, text: str, data: dict[str, Any]) -> None:
    if target.as_json:
        echo_json(data)
    else:
        click.echo(text)
