"""Redis Cluster: what codex_bot needs to know about a ``redis.asyncio.RedisCluster`` client.

A stream, its dead-letter stream and its retry ledger are touched by one Lua script, so on a
cluster they must live in one hash slot: name the stream with a hash tag (``{bot_events}``:
dead letters ``{bot_events}:dead``); a name that would split them is refused when the
processor is built. Partition streams (``{bot_events:p3}``) carry their own tag, which
spreads the partitions over the shards. Each processor needs a cluster client of its own:
redis-py's cluster client can drop healthy nodes for good after one shard fails, and then
fails on every shard; a shared client is logged as a warning.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from redis.asyncio.cluster import RedisCluster

from codex_bot.redis.exceptions import CodexBotError

logger = logging.getLogger(__name__)

_USERS: weakref.WeakKeyDictionary[RedisCluster, int] = weakref.WeakKeyDictionary()


class SlotMismatchError(CodexBotError, ValueError):
    """Keys one script must touch together map to different Redis Cluster slots.

    Put the part of the name they share in braces, a hash tag: ``{bot_events}`` and
    ``{bot_events}:dead`` hash only ``bot_events`` and share a slot.
    """


def is_cluster(redis: Any) -> bool:
    """Whether ``redis`` is a ``redis.asyncio.RedisCluster`` client."""
    return isinstance(redis, RedisCluster)


def check_same_slot(redis: Any, stream_name: str, *keys: str) -> None:
    """On a cluster client, refuse keys that do not share ``stream_name``'s slot.

    Raises:
        SlotMismatchError: one of ``keys`` maps to another slot; the message names both keys
            and shows the hash-tag form.
    """
    if not is_cluster(redis):
        return
    slot = redis.keyslot(stream_name)
    for key in keys:
        if redis.keyslot(key) != slot:
            tagged = "{" + stream_name + "}"
            msg = (
                f"{stream_name!r} (slot {slot}) and {key!r} (slot {redis.keyslot(key)}) must "
                "share a Redis Cluster slot: one script writes both. Give the stream a hash "
                f"tag, e.g. {tagged!r} (its dead letters then go to {tagged + ':dead'!r})"
            )
            raise SlotMismatchError(msg)


def note_user(redis: Any, what: str) -> None:
    """Count the processors of a cluster client; warn when one client serves several."""
    if not is_cluster(redis):
        return
    users = _USERS.get(redis, 0) + 1
    _USERS[redis] = users
    if users > 1:
        logger.warning(
            "%s shares its RedisCluster client with %s other processor(s): give each "
            "processor a client of its own (a shared one can lose healthy nodes for good "
            "after one shard fails)",
            what,
            users - 1,
        )


async def route(redis: Any, key: str | None) -> dict[str, Any]:
    """``execute_command`` options that route a command straight to ``key``'s node.

    Without them the cluster client asks a node ``COMMAND GETKEYS`` before every XREADGROUP
    (its keys come after ``STREAMS``). A fresh client loads the slot map first (once; later
    calls return at once). On a plain client, or without a key: no options.
    """
    if key is None or not is_cluster(redis):
        return {}
    await redis.initialize()
    return {"target_nodes": redis.get_node_from_key(key)}
