"""Output of ``codex-bot``: readable tables for people, JSON for scripts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from codex_bot.ops import DeadLetterEntry, text_fields
from codex_bot.ops.replies import show

_CELL = 48
"""Longest cell in a table; longer text is cut in the middle (``dead show`` has it all)."""


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows under their headers, columns padded to their widest cell."""
    cells = [[cut(str(value)) for value in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)
    ]
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def cut(value: str, width: int = _CELL) -> str:
    """``value`` on one line, at most ``width`` characters (cut in the middle)."""
    value = value.replace("\n", "\\n")
    if len(value) <= width:
        return value
    half = (width - 1) // 2
    return value[:half] + "…" + value[-(width - 1 - half) :]


def duration(ms: int | None) -> str:
    """``450ms``, ``12s``, ``5m03s``, ``2h07m``, ``3d04h``; ``-`` for None."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms}ms"
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def timestamp(ms: int | None) -> str:
    """A time in ms since the epoch as ``2024-06-10 12:00:00`` (UTC)."""
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def plural(count: int, noun: str) -> str:
    """``1 dead letter``, ``2 dead letters``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def jsonable(value: Any) -> Any:
    """Dataclasses, tuples and bytes as JSON values; a letter's fields as a text map."""
    if isinstance(value, DeadLetterEntry):
        data = {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        data["fields"] = text_fields(value)
        return data
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {show(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, bytes):
        return show(value)
    return value


def echo_json(value: Any) -> None:
    """Print ``value`` as one JSON document."""
    click.echo(json.dumps(jsonable(value), ensure_ascii=False, indent=2))
