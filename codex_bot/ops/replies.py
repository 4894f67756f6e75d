"""Raw Redis replies: read undecoded, whatever the client's ``decode_responses``.

Entries may hold bytes that are not UTF-8; a client with ``decode_responses=True`` would
fail the whole reply on them. Every read of the operations API therefore asks redis-py not
to decode, and turns names and ids into ``str`` itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from redis.client import NEVER_DECODE
from redis.exceptions import ResponseError

from codex_bot.ops.errors import OpsError, StreamNotFoundError
from codex_bot.redis.cluster import route
from codex_bot.redis.types import AnyRedis

RAW: dict[str, Any] = {NEVER_DECODE: True}
"""Options of ``execute_command`` (also on a pipeline) that leave the reply undecoded."""


async def command(redis: AnyRedis, *args: Any, key: str | None = None, **options: Any) -> Any:
    """Run a command and return its reply undecoded (bytes, not str).

    Args:
        redis: A client of one Redis, or of a cluster.
        args: The command and its arguments.
        key: On a cluster, the key whose node runs the command: a keyed command goes
            straight there, and a key-less one (TIME) runs on the node of the stream it is
            about rather than on an arbitrary node. Ignored on a single Redis.
        options: More ``execute_command`` options.
    """
    routed = await route(redis, key)
    execute: Any = redis.execute_command  # redis-py leaves it untyped
    return await execute(*args, **RAW, **routed, **options)


def show(value: bytes | str) -> str:
    """A value as text: UTF-8, with bytes that are not shown as ``\\xff`` escapes."""
    if isinstance(value, str):
        return value
    return value.decode("utf-8", "backslashreplace")


def as_map(reply: Any) -> dict[str, Any]:
    """An XINFO reply (a flat RESP2 list or a RESP3 map) as a dict with ``str`` keys."""
    if isinstance(reply, Mapping):
        items: Iterable[tuple[Any, Any]] = reply.items()
    else:
        items = zip(reply[::2], reply[1::2], strict=True)
    return {show(key): value for key, value in items}


def entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """An XRANGE reply (redis-py gives ``[(id, {field: value})]``) with ``str`` ids."""
    return [(show(entry_id), dict(fields or {})) for entry_id, fields in reply or ()]


def id_ms(entry_id: str) -> int:
    """The millisecond part of an entry id ``<ms>-<seq>``."""
    return int(entry_id.partition("-")[0])


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry id as ``(ms, seq)``, to compare ids in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    """The smallest id after ``entry_id``: an inclusive XRANGE start that skips it."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


async def server_time_ms(redis: AnyRedis, key: str | None = None) -> int:
    """Redis's clock, in ms since the epoch: ages are measured on the server's clock.

    On a cluster, the clock of ``key``'s node (the one that stamped the stream's ids).
    """
    seconds, micros = await command(redis, "TIME", key=key)
    return int(seconds) * 1000 + int(micros) // 1000


async def xinfo_stream(redis: AnyRedis, stream: str) -> dict[str, Any]:
    """XINFO STREAM as a dict.

    Raises:
        StreamNotFoundError: no such key.
        OpsError: the key holds something else than a stream.
    """
    try:
        return as_map(await command(redis, "XINFO", "STREAM", stream, key=stream))
    except ResponseError as exc:
        if str(exc).startswith(("MOVED", "ASK")):
            raise  # a cluster node asked through a client of one Redis: the caller says so
        raise _stream_error(stream, exc) from exc


def _stream_error(stream: str, exc: ResponseError) -> OpsError:
    if "no such key" in str(exc).lower():
        return StreamNotFoundError(stream)
    if str(exc).startswith("WRONGTYPE"):
        return OpsError(f"key {stream!r} is not a stream")
    return OpsError(f"cannot read stream {stream!r}: {exc}")
