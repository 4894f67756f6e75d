"""Stream entry <-> event payload, in the flat wire form the README describes.

A string value is stored as it is; any other value (number, bool, null, list, dict), and a
string that itself starts with ``json:``, is stored as ``json:`` + compact JSON. Entries
written by hand (``user_id=42``) decode to the strings they hold. Decoding is bounded by
:class:`EntryLimits`: anyone who can write to the stream can write anything into it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from codex_bot.redis.constants import ATTEMPT_FIELD, JSON_PREFIX, META_PREFIX, TYPE_FIELD
from codex_bot.redis.exceptions import MalformedEventError

_PREFIX_LEN = len(JSON_PREFIX)
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


# strict like the encoder: NaN and Infinity are not JSON, so they never decode either
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SHORT = _PREFIX_LEN + 20
"""Values up to this long are tried as a plain integer first."""


def _loads_after_prefix(value: str) -> Any:
    """``json.loads(value[5:])`` without the copy the slice makes (a big value costs 1x less)."""
    obj, end = _decoder.raw_decode(value, _skip_whitespace(value, _PREFIX_LEN))
    end = _skip_whitespace(value, end)
    if end != len(value):
        msg = "Extra data"
        raise json.JSONDecodeError(msg, value, end)
    return obj


def _skip_whitespace(text: str, pos: int) -> int:
    """Where JSON's insignificant whitespace from ``pos`` on ends."""
    found = _WHITESPACE.match(text, pos)
    return found.end() if found else pos


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
        ValueError: an empty or non-string type, a reserved key, ``data["type"]`` naming
            another type, or a value holding NaN or infinity (the message names the field).
        TypeError: ``data`` is not a mapping, a key is not a string, or JSON cannot encode
            a value (the message names the field).
    """
    if not isinstance(event_type, str) or not event_type:
        msg = f"event_type must be a non-empty string, not {event_type!r}"
        raise ValueError(msg)
    if not isinstance(data, Mapping):
        msg = f"data must be a mapping (a dict) of field names to values, not {type(data).__name__}"
        raise TypeError(msg)
    fields = {TYPE_FIELD: event_type}
    for key, value in data.items():
        _check_user_key(key)
        if key == TYPE_FIELD:
            if value != event_type:
                msg = f"data['type']={value!r} contradicts event_type={event_type!r}"
                raise ValueError(msg)
            continue
        try:
            fields[key] = encode_value(value)
        except TypeError as exc:
            msg = f"field {key!r}: {exc}"
            raise TypeError(msg) from exc
        except ValueError as exc:
            msg = f"field {key!r}: {exc}"
            raise ValueError(msg) from exc
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
    # type() rather than isinstance(): the hot path of every entry id
    return value.decode() if type(value) is bytes else cast("str", value)


@dataclass(frozen=True, slots=True)
class EntryLimits:
    """Bounds on what one stream entry may be; an entry beyond one is dead-lettered, naming it.

    The defaults are far above any real event, and still keep a hostile entry from costing
    more than a few times its size in memory or from blowing the JSON decoder's stack.

    Attributes:
        max_fields: Fields per entry.
        max_bytes: Field names and values together, in bytes.
        max_depth: Nesting of a ``json:`` value (``[1]`` is 1 deep, ``[[1]]`` 2).
        max_type_length: Characters of the ``type`` field.

    Raises:
        ValueError: a bound below 1.
    """

    max_fields: int = 1000
    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 64
    max_type_length: int = 256

    def __post_init__(self) -> None:
        if min(self.max_fields, self.max_bytes, self.max_depth, self.max_type_length) < 1:
            msg = "every entry limit must be at least 1"
            raise ValueError(msg)


DEFAULT_LIMITS = EntryLimits()


def decode_fields(
    fields: Mapping[Any, Any], limits: EntryLimits = DEFAULT_LIMITS
) -> dict[str, Any]:
    """Decode the fields of a stream entry into the payload a handler receives.

    Args:
        fields: The entry's fields, ``bytes`` or ``str``.
        limits: Bounds the entry must stay within.

    Raises:
        MalformedEventError: a name or value is not UTF-8, a ``json:`` value is not JSON, or
            the entry exceeds ``limits`` (the message names the bound).
    """
    if len(fields) > limits.max_fields:
        msg = f"entry has {len(fields)} fields (max_fields={limits.max_fields})"
        raise MalformedEventError(msg)
    payload: dict[str, Any] = {}
    size, max_bytes = 0, limits.max_bytes
    try:
        # the hot path of every event: inline type checks rather than calls to text()
        for raw_key, raw_value in fields.items():
            size += len(raw_key) + len(raw_value)
            if size > max_bytes:  # before decoding it: a copy would cost as much again
                msg = f"entry is larger than {max_bytes} bytes (max_bytes)"
                raise MalformedEventError(msg)
            key = raw_key.decode() if type(raw_key) is bytes else raw_key
            value = raw_value.decode() if type(raw_value) is bytes else raw_value
            if value.startswith(JSON_PREFIX):
                payload[key] = _json_value(key, value, limits.max_depth)
            else:
                payload[key] = value
    except UnicodeDecodeError as exc:
        msg = f"entry is not valid UTF-8: {exc}"
        raise MalformedEventError(msg) from exc
    return payload


def bad_event_type(event_type: object, limits: EntryLimits = DEFAULT_LIMITS) -> str:
    """Why ``event_type`` cannot be an entry's ``type``; "" when it can.

    A ``type`` is a non-empty string of at most ``limits.max_type_length`` characters.
    """
    if not event_type or type(event_type) is not str:
        return "entry has no 'type' field (a non-empty string)"
    if len(event_type) > limits.max_type_length:
        return (
            f"'type' is {len(event_type)} characters long "
            f"(max_type_length={limits.max_type_length})"
        )
    return ""


def _json_value(key: str, field: str, max_depth: int) -> Any:
    """Decode ``field``, a value that starts with ``json:``."""
    try:
        if len(field) <= _SHORT:
            # chat ids and counters are the common case: int() is several times cheaper
            encoded = field[_PREFIX_LEN:]
            if encoded.isdigit() and encoded.isascii() and (encoded[0] != "0" or len(encoded) == 1):
                return int(encoded)
        value = _loads_after_prefix(field)
    except RecursionError:
        msg = f"field {key!r} is nested deeper than {max_depth} levels (max_depth)"
        raise MalformedEventError(msg) from None
    except ValueError as exc:  # JSON's int() refuses more than 4300 digits with one too
        msg = f"field {key!r} is marked json: but is not valid JSON: {exc}"
        raise MalformedEventError(msg) from exc
    if (
        type(value) in _CONTAINERS
        and field.count("[", _PREFIX_LEN) + field.count("{", _PREFIX_LEN) > max_depth
        and _deeper_than(value, max_depth)
    ):
        msg = f"field {key!r} is nested deeper than {max_depth} levels (max_depth)"
        raise MalformedEventError(msg)
    return value


_CONTAINERS = (list, dict)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and dicts in ``value`` nest more than ``limit`` levels (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if type(node) is dict else node
        stack.extend((child, depth + 1) for child in children if type(child) in _CONTAINERS)
    return False


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
