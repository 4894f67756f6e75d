"""Field names, key suffixes and defaults shared by the producer, processor and retries."""

from typing import Final

TYPE_FIELD: Final = "type"
"""The one field every entry must carry: the event type handlers are routed by."""

JSON_PREFIX: Final = "json:"
"""Marks a field value as compact JSON (any non-string value, or a string that starts with it)."""

META_PREFIX: Final = "codex."
"""Reserved field-name prefix for the library's own metadata; never used for a user's keys."""

ATTEMPT_FIELD: Final = META_PREFIX + "attempt"
"""1 for the first delivery, n for the n-th attempt; the dispatcher writes it into a retry."""

HANDLERS_FIELD: Final = META_PREFIX + "handlers"
"""JSON list of handler names a retry targets; absent means every matching handler."""

FLOOD_WAITED_FIELD: Final = META_PREFIX + "flood_waited"
"""Seconds a retried event has spent waiting on Telegram's flood control, in all."""

ORIGIN_FIELD: Final = META_PREFIX + "origin_id"
"""The entry id of the first delivery of an event that has been retried."""

DEAD_REASON_FIELD: Final = META_PREFIX + "dead.reason"
DEAD_ERROR_FIELD: Final = META_PREFIX + "dead.error"
DEAD_HANDLER_FIELD: Final = META_PREFIX + "dead.handler"
DEAD_ATTEMPTS_FIELD: Final = META_PREFIX + "dead.attempts"
DEAD_SOURCE_ID_FIELD: Final = META_PREFIX + "dead.source_id"
DEAD_AT_FIELD: Final = META_PREFIX + "dead.at"
DEAD_STREAM_FIELD: Final = META_PREFIX + "dead.stream"
"""The stream a dead letter came from; absent in older letters (then: the dead stream's name
minus ``:dead``)."""

REPLAYED_FROM_FIELD: Final = META_PREFIX + "replayed_from"
"""On an entry put back from the dead-letter stream: the id of the dead letter it came from."""
DEAD_FIELDS_PREFIX: Final = META_PREFIX + "dead."
"""Every field the dead-letter stream adds starts with this."""

DEAD_LETTER_SUFFIX: Final = ":dead"
"""Appended to a stream's name to name its dead-letter stream (``bot_events:dead``)."""

DEFAULT_STREAM: Final = "bot_events"
