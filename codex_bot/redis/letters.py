"""The entries the processor writes to the dead-letter stream: the original fields plus why."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from codex_bot.redis.codec import raw_fields
from codex_bot.redis.constants import (
    DEAD_AT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_HANDLER_FIELD,
    DEAD_REASON_FIELD,
    DEAD_SOURCE_ID_FIELD,
)
from codex_bot.redis.types import DeadLetterInfo

DELETED = "entry was deleted from the stream before it was handled"
"""The reason for an entry that was deleted while pending (it has no fields left)."""


def letter(fields: Mapping[Any, Any], entry_id: str, reason: str, attempts: int) -> dict[str, str]:
    """A dead letter for an entry the processor parks (no handler involved).

    Args:
        fields: The entry's fields as read.
        entry_id: Its id.
        reason: Why it is parked.
        attempts: How often it was delivered.
    """
    out = raw_fields(fields)
    out[DEAD_REASON_FIELD] = reason
    out[DEAD_SOURCE_ID_FIELD] = entry_id
    out[DEAD_ATTEMPTS_FIELD] = str(attempts)
    out[DEAD_AT_FIELD] = str(int(time.time() * 1000))
    return out


def handler_letter(
    fields: Mapping[Any, Any], entry_id: str, dead: DeadLetterInfo
) -> dict[str, str]:
    """A dead letter for one handler's failure that will not be retried."""
    out = letter(fields, entry_id, dead.reason, dead.attempts)
    out[DEAD_HANDLER_FIELD] = dead.handler
    out[DEAD_ERROR_FIELD] = dead.error
    return out


def reason_of(letters: list[dict[str, str]]) -> str:
    """The first letter's reason, for the log line."""
    return letters[0].get(DEAD_REASON_FIELD, "") if letters else ""
