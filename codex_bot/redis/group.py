"""``GroupKeeper``: the consumer group as one processor knows it, recreated if it vanishes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from codex_bot.redis.codec import entry_id_key
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.types import Entry, GroupConsumer, ReliableStreamStorageProtocol

logger = logging.getLogger(__name__)

_MAX_LEFT_PENDING = 10_000
"""Failed entries remembered for a lost group; beyond, the claim sweep is their only path."""


def group_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the consumer group is gone.

    A blocked XREADGROUP hears of FLUSHALL or XGROUP DESTROY as UNBLOCKED rather than NOGROUP.
    """
    text = str(exc)
    return "NOGROUP" in text or "UNBLOCKED" in text


class GroupKeeper:
    """Creates the consumer group, and recreates it without replaying or skipping entries.

    A group vanishes with FLUSHALL, a restart without persistence or XGROUP DESTROY. It is
    recreated at the last entry id this process saw, so what was handled is not replayed and
    what nobody read yet is not skipped; entries whose handlers had failed were pending in
    the lost group, so they are put back in this consumer's pending list.

    Args:
        storage: Where the group lives.
        who: The stream, the group and this process's consumer.
        stats: ``groups_recreated`` counts recreations.
        start_id: Where a group that never existed starts (``"0"``: the whole stream).
    """

    def __init__(
        self,
        storage: ReliableStreamStorageProtocol,
        who: GroupConsumer,
        stats: ProcessorStats,
        start_id: str = "0",
    ) -> None:
        self.storage = storage
        self.who = who
        self.stream_name, self.group_name = who.stream, who.group
        self.stats = stats
        self.start_id = start_id
        self.ready = False
        """The group exists as far as this process knows."""
        self.last_seen_id: str | None = None
        self._existed = False
        self.left_pending: dict[str, None] = {}
        """Entries whose handling failed and that stay pending (restored if the group goes)."""
        self._restore_due = False

    async def prepare(self) -> None:
        """Create the group if it is missing; restore failed entries if it was recreated."""
        start_id = self.last_seen_id or self.start_id
        created = await self.storage.ensure_group(self.stream_name, self.group_name, start_id)
        if created and self._existed:
            self.stats.groups_recreated += 1
            self._restore_due = True
            logger.warning(
                "recreated consumer group %s on %s at %s",
                self.group_name,
                self.stream_name,
                start_id,
            )
        elif not created and self.last_seen_id is None:
            self.last_seen_id = await self.storage.group_last_delivered_id(
                self.stream_name, self.group_name
            )
        if self._restore_due:  # kept until it succeeds: a retry finds the group existing
            await self._restore_left_pending()
            self._restore_due = False
        self.ready = self._existed = True

    def lost(self) -> None:
        """The group was found missing: prepare it again before the next read."""
        self.ready = False

    def saw(self, entries: Sequence[Entry]) -> None:
        """Remember the newest entry id read so far (entries of one read come in id order)."""
        if entries:
            last = entries[-1][0]
            if self.last_seen_id is None or entry_id_key(last) > entry_id_key(self.last_seen_id):
                self.last_seen_id = last

    def failed(self, entry_id: str) -> None:
        """An entry's handling failed and it stays pending: restore it if the group vanishes."""
        if len(self.left_pending) < _MAX_LEFT_PENDING:
            self.left_pending[entry_id] = None

    def settled(self, entry_id: str) -> None:
        """An entry was acknowledged or dead-lettered: nothing to restore for it."""
        if self.left_pending:
            self.left_pending.pop(entry_id, None)

    async def _restore_left_pending(self) -> None:
        if not self.left_pending:
            return
        ids = list(self.left_pending)
        await self.storage.restore_pending(self.who, ids)
        self.left_pending.clear()
        logger.warning(
            "restored %s failed entr(ies) to the recreated group %s on %s",
            len(ids),
            self.group_name,
            self.stream_name,
        )
