"""Option types of ``codex-bot``: durations (``30m``), points in time, Redis URLs."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qsl, unquote, urlsplit

import click

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_ENTRY_ID = re.compile(r"\d+(-\d+)?")


def parse_duration(text: str) -> int:
    """``30m``, ``2h``, ``1d``, ``1h30m``, ``500ms`` in milliseconds.

    Raises:
        ValueError: not a duration with units.
    """
    value = text.strip().lower()
    if not value or _PART.sub("", value):
        msg = f"{text!r} is not a duration like 30m, 2h or 1d"
        raise ValueError(msg)
    return int(sum(float(n) * _UNIT_MS[unit] for n, unit in _PART.findall(value)))


def parse_time(text: str, now_ms: int | None = None) -> int:
    """A point in time in ms since the epoch.

    Accepts a duration meaning that long ago (``2h``), an ISO date or time (``2024-06-10``,
    ``2024-06-10T12:00``; UTC unless it gives an offset), ms since the epoch, or a stream
    entry id (its time).

    Raises:
        ValueError: none of these.
    """
    value = text.strip()
    if _ENTRY_ID.fullmatch(value):
        return int(value.partition("-")[0])
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        msg = f"{text!r} is not a time (2024-06-10T12:00, 2h for two hours ago, or an entry id)"
        raise ValueError(msg) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


OptionCallback = Callable[[click.Context, click.Parameter, str | None], int | None]


def _option(parse: Callable[[str], int]) -> OptionCallback:
    """An option callback: ``parse``, or a usage error naming the option."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


duration_option = _option(parse_duration)
"""An option callback: ``parse_duration``, or a usage error naming the option."""
time_option = _option(parse_time)
"""An option callback: ``parse_time``, or a usage error naming the option."""


def secrets_of(url: str) -> list[str]:
    """The password (and a bare user part, which some clients take as one) a URL carries."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        if at:
            user, colon, password = userinfo.partition(":")
            found.append(password if colon else user)
        found += [v for k, v in parse_qsl(parts.query) if k.lower() == "password"]
    except ValueError:
        match = re.search(r"://([^@/]*)@", url)
        if match:
            found.append(match.group(1).partition(":")[2] or match.group(1))
    found += [unquote(secret) for secret in found]
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def mask(text: str, url: str | None) -> str:
    """``text`` with every secret of ``url`` replaced by ``***``."""
    if not url:
        return text
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text
