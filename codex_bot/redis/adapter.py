"""``BasicStorageAdapter``: a storage with only the basic methods, seen as the full protocol.

``RedisStreamProcessor`` works against ``ReliableStreamStorageProtocol`` alone; a project's own
storage written to ``StreamStorageProtocol`` (``create_group``, ``read_events``, ``ack_event``,
``claim_stale_events``) is wrapped in this adapter once, at construction, and everything it
cannot do degrades here, in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from codex_bot.redis.exceptions import CodexBotError
from codex_bot.redis.types import ClaimPage, Entry, GroupConsumer, Letters, StreamStorageProtocol

_DONE = "0-0"


class DeadLetterUnsupportedError(CodexBotError):
    """The storage cannot write dead letters; the entry stays pending instead.

    Implement ``ReliableStreamStorageProtocol`` (or use ``RedisStreamStorage``) to park bad
    entries in the dead-letter stream.
    """


class BasicStorageAdapter:
    """``ReliableStreamStorageProtocol`` over a storage that has only the basic methods.

    What degrades:

    - reads do not block on the server: an empty read sleeps for the time the processor would
      have blocked (``poll_interval`` at most);
    - acknowledgements go one ``ack_event`` at a time;
    - claims take the first page of ``claim_stale_events``; a storage without that method is
      never swept;
    - there are no delivery counts, so ``max_deliveries`` is not enforced;
    - a lost group is recreated by ``create_group`` (at ``0``: its history is handled again), and
      this consumer's own pending entries are not read back at start-up;
    - dead letters cannot be written: ``dead_letter`` raises and the entry stays pending.

    Args:
        storage: The project's ``StreamStorageProtocol`` implementation.
    """

    def __init__(self, storage: StreamStorageProtocol) -> None:
        self.storage = storage

    async def ensure_group(self, stream_name: str, group_name: str, start_id: str) -> bool:
        """``create_group``; always False, since the basic protocol cannot tell."""
        await self.storage.create_group(stream_name, group_name)
        return False

    async def group_last_delivered_id(self, stream_name: str, group_name: str) -> str | None:
        """Unknown: None."""
        return None

    async def read_new(self, who: GroupConsumer, count: int, block_ms: int) -> list[Entry]:
        """``read_events``; when it returns nothing, sleep ``block_ms`` instead of blocking."""
        entries = await self.storage.read_events(*who, count)
        if not entries:
            await asyncio.sleep(block_ms / 1000)
        return list(entries)

    async def ack_and_read_new(
        self, who: GroupConsumer, ack_ids: Sequence[str], count: int, block_ms: int
    ) -> list[Entry]:
        """Acknowledge one by one, then read."""
        await self.ack_events(who.stream, who.group, ack_ids)
        return await self.read_new(who, count, block_ms)

    async def restore_pending(self, who: GroupConsumer, entry_ids: Sequence[str]) -> None:
        """Nothing to restore: a basic storage never reports a recreated group."""

    async def read_own_pending(self, who: GroupConsumer, after_id: str, count: int) -> list[Entry]:
        """Not available: no entries."""
        return []

    async def claim_stale(
        self, who: GroupConsumer, min_idle_ms: int, cursor: str, count: int
    ) -> ClaimPage:
        """The first page of ``claim_stale_events``, or nothing if the storage lacks it."""
        claim = getattr(self.storage, "claim_stale_events", None)
        if claim is None:
            return ClaimPage(_DONE, [], [])
        entries = await claim(*who, min_idle_ms, count)
        return ClaimPage(_DONE, list(entries), [])

    async def delivery_counts(
        self, stream_name: str, group_name: str, entry_ids: Sequence[str]
    ) -> dict[str, int]:
        """Unknown: every entry counts as delivered once."""
        return {}

    async def ack_events(self, stream_name: str, group_name: str, entry_ids: Sequence[str]) -> int:
        """``ack_event`` for each id, in order."""
        for entry_id in entry_ids:
            await self.storage.ack_event(stream_name, group_name, entry_id)
        return len(entry_ids)

    async def dead_letter(
        self, stream_name: str, group_name: str, entry_id: str, dead_stream: str, letters: Letters
    ) -> None:
        """Not available.

        Raises:
            DeadLetterUnsupportedError: always; the entry stays pending.
        """
        msg = f"{type(self.storage).__name__} has no dead_letter(); {entry_id} stays pending"
        raise DeadLetterUnsupportedError(msg)
