"""How events map to partition streams: the names and the hash, exactly, for every language.

With ``partitions=N`` a stream ``S`` is N streams, ``{S:p0}`` to ``{S:p<N-1>}``. The braces
are a Redis Cluster hash tag: each partition, its dead letters ``{S:p3}:dead``, its retry
ledger and its lease live on one slot, and different partitions spread over the shards.

An event goes to partition ``crc32(key) mod N``, where ``key`` is its ordering key (by
default ``chat_id``, else ``user_id``) as UTF-8 text: a string as it is, an integer in decimal
(``42``, ``-1001234567890``), anything else as compact JSON; crc32 is the IEEE checksum of
zlib, PHP's ``crc32()``, Go's ``crc32.ChecksumIEEE`` and Java's ``java.util.zip.CRC32``. An
event without a key may go to any partition. A backend in another language writes
``XADD {bot_events:p<i>} * type ... chat_id 42 ...`` with ``i = crc32("42") % N``.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Mapping
from typing import Any

PartitionKeyFunc = Callable[[Mapping[str, Any]], Any]
"""``data -> key``: the value whose events must stay in one partition (None: any)."""


def partition_stream(stream_name: str, index: int) -> str:
    """The name of partition ``index`` of ``stream_name``: ``{<stream_name>:p<index>}``."""
    return f"{{{stream_name}:p{index}}}"


def check_partitioned_name(stream_name: str, partitions: int) -> None:
    """Refuse a stream name or a count that partitions cannot carry.

    Raises:
        ValueError: ``partitions`` below 1, or a name with braces (it would nest hash tags
            and put every partition on one slot).
    """
    if partitions < 1:
        msg = f"partitions must be at least 1, got {partitions}"
        raise ValueError(msg)
    if "{" in stream_name or "}" in stream_name:
        msg = (
            f"a partitioned stream's name must not contain braces ({stream_name!r}): its "
            f"partitions are named {partition_stream('<name>', 0)!r}, already hash-tagged"
        )
        raise ValueError(msg)


def key_text(key: Any) -> str:
    """The text a partition key is hashed as: a string as it is, else compact JSON."""
    if type(key) is str:
        return key
    if type(key) is int:
        return str(key)
    return json.dumps(key, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


_CANONICAL_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")


def partition_of(key: Any, partitions: int) -> int:
    """The partition of an event whose ordering key is ``key``: ``crc32(text) % partitions``."""
    return zlib.crc32(key_text(key).encode()) % partitions


def default_ordering_key(payload: Mapping[str, Any]) -> Any:
    """The payload's ``chat_id``, else its ``user_id``, else None (no ordering).

    The processor's default ordering key, and the producer's default partition key. A
    string that is a number as ``str(int)`` writes it (``"7"``, ``"-100123"``) is that
    number, so ``7`` and ``"7"`` are one chat; its partition is the same either way.
    """
    key = payload.get("chat_id")
    if key is None:
        key = payload.get("user_id")
    if type(key) is str and _CANONICAL_INT.fullmatch(key):
        return int(key)
    return key
