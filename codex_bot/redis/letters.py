"""The entries the processor writes to the dead-letter stream: the original fields plus why.

A letter keeps the failed entry's field names and values byte for byte, so a replay restores
the event exactly, and adds the ``codex.dead.*`` fields beside them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from codex_bot.redis.constants import (
    DEAD_AT_FIELD,
    DEAD_ATTEMPTS_FIELD,
    DEAD_ERROR_FIELD,
    DEAD_FIELDS_PREFIX,
    DEAD_HANDLER_FIELD,
    DEAD_REASON_FIELD,
    DEAD_SOURCE_ID_FIELD,
    DEAD_STREAM_FIELD,
)
from codex_bot.redis.types import DeadLetterInfo

DELETED = "entry was deleted from the stream before it was handled"
"""The reason for an entry that was deleted while pending (it has no fields left)."""
_MAX_TEXT = 2000
"""Characters of a reason or an error a letter keeps."""
_OURS_BYTES = DEAD_FIELDS_PREFIX.encode()

Letter = dict[Any, Any]
"""Field name -> value, ``bytes`` as read from the stream or ``str`` for the added fields."""

LUA_MAX_FIELDS = 3500
"""Fields of one letter a script can write; Lua unpacks about 8,000 values at most, so a
larger letter is written with plain XADDs instead."""


def xadd_letters_lua(dead_key: str, first_arg: int) -> str:
    """Lua appending the letters packed in ARGV from ``first_arg`` on to ``dead_key``.

    The scripts that dead-letter share it; ``pack_letters`` packs their arguments. It stops
    at the first XADD that fails, before the script's own ACK or bookkeeping runs.
    """
    return f"""
local i = {first_arg}
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call('XADD', {dead_key}, '*', unpack(ARGV, i + 1, i + 2 * n))
  i = i + 2 * n + 1
end
"""


def pack_letters(letters: Iterable[Mapping[Any, Any]]) -> list[Any]:
    """Letters as ``xadd_letters_lua`` reads them: each one's number of fields, then its pairs."""
    args: list[Any] = []
    for letter_ in letters:
        args.append(len(letter_))
        for field, value in letter_.items():
            args += (field, value)
    return args


def letter(
    fields: Mapping[Any, Any], stream_name: str, entry_id: str, reason: str, attempts: int
) -> Letter:
    """A dead letter for an entry the processor parks (no handler involved).

    Args:
        fields: The entry's fields as read (kept as they are).
        stream_name: The stream it was read from.
        entry_id: Its id.
        reason: Why it is parked.
        attempts: How often it was delivered.
    """
    # a hostile entry's own codex.dead.* fields would stand beside ours under the same name
    out: Letter = {key: value for key, value in fields.items() if not _ours(key)}
    out[DEAD_REASON_FIELD] = reason[:_MAX_TEXT]
    out[DEAD_STREAM_FIELD] = stream_name
    out[DEAD_SOURCE_ID_FIELD] = entry_id
    out[DEAD_ATTEMPTS_FIELD] = str(attempts)
    out[DEAD_AT_FIELD] = str(int(time.time() * 1000))
    return out


def handler_letter(
    fields: Mapping[Any, Any], stream_name: str, entry_id: str, dead: DeadLetterInfo
) -> Letter:
    """A dead letter for a failure the dispatcher reported: a handler's, or no handler at all."""
    out = letter(fields, stream_name, entry_id, dead.reason, dead.attempts)
    if dead.handler:
        out[DEAD_HANDLER_FIELD] = dead.handler
    if dead.error:
        out[DEAD_ERROR_FIELD] = dead.error[:_MAX_TEXT]
    return out


def _ours(key: Any) -> bool:
    if isinstance(key, bytes):
        return key.startswith(_OURS_BYTES)
    return isinstance(key, str) and key.startswith(DEAD_FIELDS_PREFIX)


def reason_of(letters: list[Letter]) -> str:
    """The first letter's reason, for the log line."""
    return str(letters[0].get(DEAD_REASON_FIELD, "")) if letters else ""
