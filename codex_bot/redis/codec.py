"""Stream entry <-> event payload, in the flat wire form the README describes.

A string value is stored as it is; any other value (number, bool, null, list, dict), and a
string that itself starts with ``json:``, is stored as ``json:`` + compact JSON. Entries
written by hand (``user_id=42``) decode to the strings they hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from codex_bot.redis.constants import ATTEMPT_FIELD, JSON_PREFIX, META_PREFIX, TYPE_FIELD
from codex_bot.redis.exceptions import MalformedEventError

_PREFIX_LEN = len(JSON_PREFIX)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


# strict like the encoder: NaN and Infinity are not JSON, so they never decode either
_loads = json.JSONDecoder(parse_constant=_reject_constant).decode


def encode_value(value: Any) -> str:
    """Encode one field value for a stream entry.

    Raises:
        TypeError: the value is not JSON-serialisable.
        ValueError: the value holds NaN or infinity, which JSON cannot carry.
    """
    if type(value) is str and not value.startswith(JSON_PREFIX):
        return value
    return JSON_PREFIX + _dumps(value)


def encode_event(event_type: str, data: Mapping[str, Any]) -> dict[str, str]:
    """Build the fields of a stream entry for an event.

    Args:
        event_type: The event's type, stored in the ``type`` field.
        data: The payload; keys are strings and must not use the reserved ``codex.`` prefix.

    Returns:
        Field name -> string value, ready for XADD.

    Raises:
        ValueError: empty type, a reserved key, or ``data["type"]`` naming another type.
        TypeError: a key that is not a string or a value JSON cannot encode.
    """
    if not event_type:
        msg = "event_type must be a non-empty string"
        raise ValueError(msg)
    fields = {TYPE_FIELD: event_type}
    for key, value in data.items():
        _check_user_key(key)
        if key == TYPE_FIELD:
            if value != event_type:
                msg = f"data['type']={value!r} contradicts event_type={event_type!r}"
                raise ValueError(msg)
            continue
        fields[key] = encode_value(value)
    return fields


def encode_payload(payload: Mapping[str, Any]) -> dict[str, str]:
    """Encode a payload that already carries ``type`` (and maybe ``codex.`` metadata)."""
    return {key: encode_value(value) for key, value in payload.items()}


def _check_user_key(key: object) -> None:
    if not isinstance(key, str):
        msg = f"field names must be strings, got {type(key).__name__}"
        raise TypeError(msg)
    if key.startswith(META_PREFIX):
        msg = f"field {key!r} uses the reserved prefix {META_PREFIX!r}"
        raise ValueError(msg)


def text(value: str | bytes) -> str:
    """Return a Redis reply item as ``str`` whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else value


def decode_fields(fields: Mapping[Any, Any]) -> dict[str, Any]:
    """Decode the fields of a stream entry into the payload a handler receives.

    Raises:
        MalformedEventError: a name or value is not UTF-8, or a ``json:`` value is not JSON.
    """
    payload: dict[str, Any] = {}
    try:
        # the hot path of every event: inline type checks rather than calls to text()
        for raw_key, raw_value in fields.items():
            key = raw_key.decode() if type(raw_key) is bytes else raw_key
            value = raw_value.decode() if type(raw_value) is bytes else raw_value
            if value.startswith(JSON_PREFIX):
                payload[key] = _json_value(key, value[_PREFIX_LEN:])
            else:
                payload[key] = value
    except UnicodeDecodeError as exc:
        msg = f"entry is not valid UTF-8: {exc}"
        raise MalformedEventError(msg) from exc
    return payload


def _json_value(key: str, encoded: str) -> Any:
    # chat ids and counters are the common case: int() is several times cheaper than JSON
    if encoded.isdigit() and encoded.isascii() and (encoded[0] != "0" or len(encoded) == 1):
        return int(encoded)
    try:
        return _loads(encoded)
    except ValueError as exc:
        msg = f"field {key!r} is marked json: but is not valid JSON: {exc}"
        raise MalformedEventError(msg) from exc


def raw_fields(fields: Mapping[Any, Any]) -> dict[str, str]:
    """Copy an entry's fields as strings, keeping undecodable bytes visible (for dead letters)."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        k = key.decode("utf-8", "backslashreplace") if type(key) is bytes else str(key)
        v = value.decode("utf-8", "backslashreplace") if type(value) is bytes else str(value)
        out[k] = v
    return out


def split_meta(payload: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a decoded payload into the user's fields and the library's ``codex.`` metadata."""
    user: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in payload.items():
        (meta if key.startswith(META_PREFIX) else user)[key] = value
    return user, meta


def attempt_of(data: Mapping[str, Any]) -> int:
    """The ``codex.attempt`` a decoded event carries: 1 when absent or not a number."""
    try:
        return max(int(data.get(ATTEMPT_FIELD, 1)), 1)
    except (TypeError, ValueError):
        return 1


def entry_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id ``<ms>-<seq>``: ids compare as numbers, not strings."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
