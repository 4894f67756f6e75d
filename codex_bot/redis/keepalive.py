"""``HeldEntries``: entries waiting in this process must not look idle to other consumers.

Once sends are paced by Telegram's limits, an entry can wait minutes in the processor: behind
its chat's earlier events, or for a send slot (a group takes 20 messages a minute). Past
``claim_min_idle_ms`` another consumer's claim sweep would take it and handle it a second
time, out of order. So every third of ``claim_min_idle_ms`` the entries this process holds are
claimed again to itself (``XCLAIM ... JUSTID``: no delivery counted), which resets their idle
time; an entry another consumer took meanwhile is left with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from codex_bot.redis.tasks import cancel
from codex_bot.redis.types import ConsumerUpkeepProtocol, GroupConsumer

logger = logging.getLogger("codex_bot.redis.processor")

_MIN_PERIOD = 0.05


class HeldEntries:
    """Keeps the entries a processor holds fresh until it stops.

    Args:
        storage: Resets idle times.
        who: The stream, the consumer group and this process's consumer.
        held: Returns the ids of the entries held right now (admitted, not finished).
        claim_min_idle_ms: The idle time at which other consumers claim an entry.
    """

    def __init__(
        self,
        storage: ConsumerUpkeepProtocol,
        who: GroupConsumer,
        held: Callable[[], Collection[str]],
        claim_min_idle_ms: int,
    ) -> None:
        self.storage = storage
        self.who = who
        self.held = held
        self.period = max(claim_min_idle_ms / 3000, _MIN_PERIOD)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start refreshing in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"codex-held:{self.who.stream}")

    async def stop(self) -> None:
        """Stop refreshing: entries given up on stop become claimable after the idle time."""
        task, self._task = self._task, None
        await cancel(task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            ids = list(self.held())
            if not ids:
                continue
            try:
                await self.storage.refresh_pending(self.who, ids)
            except Exception as exc:  # noqa: BLE001 - the read loop reports outages; try again
                logger.debug(
                    "could not refresh %s held entries of %s: %r", len(ids), self.who.stream, exc
                )
