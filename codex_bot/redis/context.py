"""Where the event a handler runs for came from: ask with ``current_event()``."""

from __future__ import annotations

from contextvars import ContextVar
from typing import NamedTuple


class EventContext(NamedTuple):
    """The stream entry being handled (a NamedTuple: one is built for every event).

    Attributes:
        stream_name: The stream the entry was read from.
        entry_id: Its id in that stream.
        deliveries: How often the group delivered this entry (1 on a first read).
        attempt: The dispatcher's attempt number (1 on a first delivery, n on retry n-1).
        origin_id: The entry id of the event's first delivery (differs after a retry).
    """

    stream_name: str
    entry_id: str
    deliveries: int = 1
    attempt: int = 1
    origin_id: str = ""


_current: ContextVar[EventContext | None] = ContextVar("codex_bot_event", default=None)


def current_event() -> EventContext | None:
    """The entry the running handler was called for, or None outside a processor."""
    return _current.get()
