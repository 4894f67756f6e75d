"""Dead letters: read them from their raw fields, select them, and build their replay.

A letter holds the failed entry's fields byte for byte plus the ``codex.dead.*`` fields the
processor adds. Its replay is the original entry again, with fresh ``codex.`` metadata: no
attempt count (it starts afresh), the failed handler as the only target, the first
delivery's id as origin, and the letter's id in ``codex.replayed_from``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from codex_bot.ops.models import DeadLetterEntry
from codex_bot.ops.replies import id_ms, show
from codex_bot.redis.codec import encode_value
from codex_bot.redis.constants import (
    DEAD_AT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_HANDLER_FIELD,
    DEAD_LETTER_SUFFIX,
    DEAD_REASON_FIELD,
    DEAD_SOURCE_ID_FIELD,
    DEAD_STREAM_FIELD,
    HANDLERS_FIELD,
    META_PREFIX,
    ORIGIN_FIELD,
    REPLAYED_FROM_FIELD,
    TYPE_FIELD,
)

_META = META_PREFIX.encode()


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; every given criterion must hold.

    Attributes:
        event_type: The event's ``type``, exactly.
        reason: A substring of ``codex.dead.reason``.
        handler: The failed handler: its full name ``module.qualname``, or its tail
            (``send_notification`` matches ``app.handlers.send_notification``).
        since_ms: Letters written at or after this time (ms since the epoch).
        until_ms: Letters written at or before this time.
        last_id: Letters up to this letter id only (a replay confirmed for a set of letters
            leaves out those written after the confirmation).
    """

    event_type: str | None = None
    reason: str | None = None
    handler: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    last_id: str | None = None

    def matches(self, letter: DeadLetterEntry) -> bool:
        """Whether the letter meets the type, reason and handler criteria.

        The time and id bounds are applied by the range read; see ``range_bounds``.
        """
        if self.event_type is not None and letter.event_type != self.event_type:
            return False
        if self.reason is not None and self.reason not in letter.reason:
            return False
        if self.handler is None:
            return True
        name = letter.handler or ""
        return name == self.handler or name.endswith("." + self.handler)

    def range_bounds(self) -> tuple[str, str]:
        """The XRANGE start and end ids that cover the time and id bounds."""
        start = "-" if self.since_ms is None else f"{self.since_ms}-0"
        ends = [bound for bound in (self.until_ms, self.last_id) if bound is not None]
        if not ends:
            return start, "+"
        # "1718000000000" as an XRANGE end means every sequence number of that millisecond
        end = min((str(bound) for bound in ends), key=_end_key)
        return start, end


def _end_key(bound: str) -> tuple[int, int]:
    ms, _, seq = bound.partition("-")
    return int(ms), int(seq) if seq else 2**64


def source_stream_of(dead_stream: str, fallback: str) -> str:
    """The source stream of a letter without ``codex.dead.stream``: the dead stream's name
    minus ``:dead``, or ``fallback`` for a dead-letter stream named otherwise."""
    if dead_stream.endswith(DEAD_LETTER_SUFFIX) and len(dead_stream) > len(DEAD_LETTER_SUFFIX):
        return dead_stream[: -len(DEAD_LETTER_SUFFIX)]
    return fallback


def parse_letter(
    letter_id: str, fields: Mapping[bytes, bytes], dead_stream: str, fallback_stream: str
) -> DeadLetterEntry:
    """Read a letter's raw fields.

    Args:
        letter_id: Its id in the dead-letter stream.
        fields: Its fields as read undecoded.
        dead_stream: The dead-letter stream it is in.
        fallback_stream: The source stream when neither ``codex.dead.stream`` nor a
            ``:dead`` suffix names it.

    Returns:
        The letter, with the ``codex.dead.*`` fields as text.
    """

    def get(name: str) -> str | None:
        value = fields.get(name.encode())
        return None if value is None else show(value)

    stream = get(DEAD_STREAM_FIELD) or source_stream_of(dead_stream, fallback_stream)
    at = get(DEAD_AT_FIELD)
    attempts = get(DEAD_ATTEMPTS_FIELD)
    return DeadLetterEntry(
        id=letter_id,
        dead_stream=dead_stream,
        source_stream=stream,
        fields=tuple(fields.items()),
        event_type=get(TYPE_FIELD),
        reason=get(DEAD_REASON_FIELD) or "",
        handler=get(DEAD_HANDLER_FIELD) or None,
        error=get(DEAD_ERROR_FIELD),
        source_id=get(DEAD_SOURCE_ID_FIELD),
        attempts=int(attempts) if attempts and attempts.isdigit() else None,
        at_ms=int(at) if at and at.isdigit() else id_ms(letter_id),
        origin_id=get(ORIGIN_FIELD),
    )


def replayed_fields(letter: DeadLetterEntry) -> dict[bytes, bytes]:
    """The fields of the entry a replay adds to the source stream.

    Every original field byte for byte, minus all ``codex.`` fields; then
    ``codex.handlers`` naming the failed handler (when the letter names one),
    ``codex.origin_id`` (the letter's own, else the failed entry's id) and
    ``codex.replayed_from`` (the letter's id). A letter the processor parked itself names
    no handler: a ``codex.handlers`` the entry carried (a retry for some handlers only) is
    kept, so handlers that already succeeded on it do not run again.
    """
    original = dict(letter.fields)
    out = {name: value for name, value in letter.fields if not name.startswith(_META)}
    handlers = HANDLERS_FIELD.encode()
    if letter.handler:
        out[handlers] = encode_value([letter.handler]).encode()
    elif handlers in original:
        out[handlers] = original[handlers]
    origin = original.get(ORIGIN_FIELD.encode()) or (letter.source_id or "").encode()
    if origin:
        out[ORIGIN_FIELD.encode()] = origin
    out[REPLAYED_FROM_FIELD.encode()] = letter.id.encode()
    return out


def text_fields(letter: DeadLetterEntry) -> dict[str, str]:
    """Every field of the letter as text (bytes that are not UTF-8 shown as escapes)."""
    return {show(name): show(value) for name, value in letter.fields}
