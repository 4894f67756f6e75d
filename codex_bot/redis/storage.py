"""``RedisStreamStorage``: the redis-py (asyncio) implementation of the storage protocols."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from codex_bot.redis.codec import text
from codex_bot.redis.types import ClaimPage, Entry

logger = logging.getLogger(__name__)

_BLOCK_MARGIN = 0.8
"""Share of the client's socket_timeout a blocking read may use before redis-py gives up."""


class RedisStreamStorage:
    """Consumer-group I/O over ``redis.asyncio.Redis``, with or without ``decode_responses``.

    Implements ``StreamStorageProtocol`` (the seed's four methods) and
    ``ReliableStreamStorageProtocol`` (blocking reads, cursor claims, batched ACKs,
    atomic dead letters) that ``RedisStreamProcessor`` uses when present.

    Args:
        redis: An asyncio client. A blocking read never waits longer than 80% of its
            ``socket_timeout``, so a quiet stream does not turn into a client timeout.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
        self._max_block_ms = int(timeout * 1000 * _BLOCK_MARGIN) if timeout else None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStreamStorage:
        """Build a storage over ``Redis.from_url(url, **kwargs)``."""
        return cls(Redis.from_url(url, **kwargs))

    # -- the seed's protocol -------------------------------------------------------------

    async def create_group(self, stream_name: str, group_name: str) -> None:
        """Create the group at id ``0`` with MKSTREAM, so earlier entries are handled too."""
        await self.ensure_group(stream_name, group_name, "0")

    async def read_events(
        self, stream_name: str, group_name: str, consumer_name: str, count: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """Read up to ``count`` new entries without blocking."""
        reply = await self.redis.xreadgroup(group_name, consumer_name, {stream_name: ">"}, count)
        return _entries(reply)

    async def ack_event(self, stream_name: str, group_name: str, message_id: str) -> None:
        """Acknowledge one entry."""
        await self.redis.xack(stream_name, group_name, message_id)

    async def claim_stale_events(
        self,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        min_idle_time: int,
        count: int,
    ) -> list[tuple[str, dict[str, Any]]]:
        """Claim the first page of entries idle for ``min_idle_time`` ms."""
        page = await self.claim_stale(
            stream_name, group_name, consumer_name, min_idle_time, "0-0", count
        )
        return [(entry_id, dict(fields)) for entry_id, fields in page.entries]

    # -- what the processor needs to lose nothing ----------------------------------------

    async def ensure_group(self, stream_name: str, group_name: str, start_id: str) -> bool:
        """Create the group at ``start_id``; False when it already exists (BUSYGROUP)."""
        try:
            await self.redis.xgroup_create(stream_name, group_name, id=start_id, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def group_last_delivered_id(self, stream_name: str, group_name: str) -> str | None:
        """The group's last-delivered id, or None if the stream or the group is missing."""
        try:
            groups = await self.redis.xinfo_groups(stream_name)
        except ResponseError as exc:
            if "no such key" in str(exc):
                return None
            raise
        for group in groups:
            if text(group["name"]) == group_name:
                return text(group["last-delivered-id"])
        return None

    async def read_new(
        self, stream_name: str, group_name: str, consumer_name: str, count: int, block_ms: int
    ) -> list[Entry]:
        """Wait on the server up to ``block_ms`` (never 0: that means forever) for new entries."""
        if self._max_block_ms is not None:
            block_ms = min(block_ms, self._max_block_ms)
        reply = await self.redis.xreadgroup(
            group_name, consumer_name, {stream_name: ">"}, count, max(block_ms, 1)
        )
        return _entries(reply)

    async def read_own_pending(
        self, stream_name: str, group_name: str, consumer_name: str, after_id: str, count: int
    ) -> list[Entry]:
        """This consumer's pending entries after ``after_id`` (history read, no block)."""
        reply = await self.redis.xreadgroup(
            group_name, consumer_name, {stream_name: after_id}, count
        )
        return _entries(reply)

    async def claim_stale(
        self,
        stream_name: str,
        group_name: str,
        consumer_name: str,
        min_idle_ms: int,
        cursor: str,
        count: int,
    ) -> ClaimPage:
        """One XAUTOCLAIM page. Redis >= 7 also names entries deleted while pending."""
        reply = await self.redis.xautoclaim(
            stream_name, group_name, consumer_name, min_idle_ms, cursor, count
        )
        entries = [(text(entry_id), fields) for entry_id, fields in reply[1] if entry_id]
        deleted = [text(entry_id) for entry_id in reply[2]] if len(reply) > 2 else []
        return ClaimPage(text(reply[0]), entries, deleted)

    async def delivery_counts(
        self, stream_name: str, group_name: str, entry_ids: Sequence[str]
    ) -> dict[str, int]:
        """Delivery counts of pending entries, read with one XPENDING over their id range."""
        if not entry_ids:
            return {}
        wanted = set(entry_ids)
        rows = await self.redis.xpending_range(
            stream_name,
            group_name,
            min(entry_ids, key=_id_key),
            max(entry_ids, key=_id_key),
            len(entry_ids) * 2 + 10,
        )
        counts = {text(row["message_id"]): int(row["times_delivered"]) for row in rows}
        return {entry_id: n for entry_id, n in counts.items() if entry_id in wanted}

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        """Acknowledge many entries in one XACK."""
        if not entry_ids:
            return 0
        return int(await self.redis.xack(stream_name, group_name, *entry_ids))

    async def dead_letter(
        self,
        stream_name: str,
        group_name: str,
        entry_id: str,
        dead_stream: str,
        letters: Sequence[Mapping[str, str]],
    ) -> None:
        """Append the letters to ``dead_stream`` and ACK the entry in one MULTI/EXEC."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for letter in letters:
                pipe.xadd(dead_stream, dict(letter))  # type: ignore[arg-type]
            pipe.xack(stream_name, group_name, entry_id)
            await pipe.execute()


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _entries(reply: Any) -> list[Any]:
    if not reply:
        return []
    # RESP3 answers a map of stream -> entries, RESP2 a list of [stream, entries]
    batches = list(reply.values()) if isinstance(reply, dict) else [m for _, m in reply]
    return [(text(entry_id), fields) for messages in batches for entry_id, fields in messages]
