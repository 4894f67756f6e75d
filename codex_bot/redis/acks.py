"""``AckBuffer``: finished entries waiting for their XACK, acknowledged in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from codex_bot.redis.backoff import Backoff, Outage
from codex_bot.redis.exceptions import LeaseLostError
from codex_bot.redis.stats import ProcessorStats
from codex_bot.redis.types import ReliableStreamStorageProtocol

T = TypeVar("T")


class AckBuffer:
    """Entry ids whose handling is done, sent to Redis in as few XACKs as possible.

    A background task (``run``) acknowledges what is buffered; the entries that finish while
    one XACK is on the wire go in the next. While a backlog drains, the read loop sends the
    buffer in the same round trip as its next read instead (``ride_along``). Either way, ids
    whose XACK failed go back into the buffer: they are acknowledged later or, if the process
    stops first, stay pending and come back.

    Args:
        storage: Where the XACKs go.
        stream_name: The stream the entries belong to.
        group_name: The consumer group that acknowledges them.
        stats: ``acked`` counts every acknowledged entry.
        outage: Failed XACKs count as failed attempts of the processor.
        backoff: Waits between failed XACKs.
        on_acked: Called after entries were acknowledged (reading may resume).
        limit: ``full`` is true from this many buffered ids on.
    """

    def __init__(
        self,
        storage: ReliableStreamStorageProtocol,
        stream_name: str,
        group_name: str,
        *,
        stats: ProcessorStats,
        outage: Outage,
        backoff: Backoff,
        on_acked: Callable[[], None],
        limit: int,
    ) -> None:
        self.storage = storage
        self.stream_name, self.group_name = stream_name, group_name
        self.stats, self.outage, self.backoff = stats, outage, backoff
        self.limit = limit
        self._on_acked = on_acked
        self._ids: list[str] = []
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def full(self) -> bool:
        """So many ids wait for their XACK that reading should pause until they are sent."""
        return len(self._ids) >= self.limit

    def add(self, entry_id: str) -> None:
        """Buffer one finished entry."""
        self._ids.append(entry_id)
        self._wakeup.set()

    async def ride_along(self, call: Callable[[Sequence[str]], Awaitable[T]]) -> T:
        """Take the buffered ids and run ``call(ids)``, which acknowledges them.

        Returns:
            What ``call`` returned.

        Raises:
            Exception: whatever ``call`` raised; the ids are back in the buffer.
        """
        ids, self._ids = self._ids, []
        try:
            result = await call(ids)
        except BaseException:
            self._ids[:0] = ids
            raise
        if ids:
            self.stats.acked += len(ids)
            self._on_acked()
        return result

    async def flush(self) -> None:
        """Acknowledge everything buffered in one XACK."""
        if self._ids:
            await self.ride_along(self._ack)

    async def run(self) -> None:
        """Acknowledge buffered entries until cancelled, retrying with backoff while Redis fails."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._ids:
                try:
                    await self.flush()
                except asyncio.CancelledError:
                    raise
                except LeaseLostError:
                    # the partition's new owner handles these again from the pending list
                    self._ids.clear()
                except Exception as exc:  # noqa: BLE001 - kept in the buffer, retried
                    self.outage.failed(exc)
                    await self.backoff.sleep()
                else:
                    self.outage.recovered()
                    self.backoff.reset()

    async def _ack(self, ids: Sequence[str]) -> int:
        return await self.storage.ack_events(self.stream_name, self.group_name, ids)
