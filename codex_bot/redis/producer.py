"""``StreamProducer`` and ``SyncStreamProducer``: what backend services push events with.

Importing this module loads redis-py only: no aiogram, no arq.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, cast

import redis
import redis.asyncio

from codex_bot.redis.codec import encode_event, text
from codex_bot.redis.constants import DEFAULT_STREAM
from codex_bot.redis.partitioning import (
    PartitionKeyFunc,
    check_partitioned_name,
    default_ordering_key,
    partition_of,
    partition_stream,
)

Event = tuple[str, Mapping[str, Any]]
"""``(event_type, data)`` for ``add_events``."""


class _ProducerBase:
    def __init__(
        self,
        stream_name: str,
        maxlen: int | None,
        approximate: bool,
        partitions: int | None,
        partition_key: PartitionKeyFunc,
    ) -> None:
        if maxlen is not None and maxlen < 1:
            msg = "maxlen must be positive or None"
            raise ValueError(msg)
        if partitions is not None:
            check_partitioned_name(stream_name, partitions)
        self.stream_name = stream_name
        self.maxlen = maxlen
        self.approximate = approximate
        self.partitions = partitions
        self.partition_key = partition_key
        self._spread = itertools.count()  # events without a key go round the partitions

    def stream_for(self, data: Mapping[str, Any]) -> str:
        """The stream an event with this data goes to: its partition, with ``partitions``."""
        if self.partitions is None:
            return self.stream_name
        key = self.partition_key(data)
        index = next(self._spread) if key is None else partition_of(key, self.partitions)
        return partition_stream(self.stream_name, index % self.partitions)

    def _xadd_args(self, event_type: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "name": self.stream_for(data),
            "fields": encode_event(event_type, data),
            "maxlen": self.maxlen,
            "approximate": self.approximate,
        }


class StreamProducer(_ProducerBase):
    """Pushes events onto a Redis Stream from async code (``redis.asyncio.Redis``).

    Values keep their JSON types through the stream: numbers, booleans, nulls, lists and
    dicts arrive in the handler as they were sent.

    Args:
        redis: An asyncio client.
        stream_name: The stream the bot consumes.
        maxlen: Trim the stream to about this many entries (``MAXLEN ~``); None keeps all.
            Trimming deletes the oldest entries whether or not the bot handled them, so keep
            it well above the backlog an outage of the bot can build up.
        approximate: Use ``MAXLEN ~`` (cheap) rather than an exact trim.
        partitions: Write each event to one of this many partition streams, chosen by its
            partition key (see ``codex_bot.redis.partitioning``); the processor must use the
            same number. None: one stream.
        partition_key: ``data -> key``; default ``chat_id``, else ``user_id`` (the processor's
            default ordering key). An event without a key goes to any partition.

    Example:
        ```python
        producer = StreamProducer(Redis.from_url("redis://localhost"), "bot_events")
        entry_id = await producer.add_event("booking.confirmed", {"chat_id": 42, "slot": "10:00"})
        ```
    """

    def __init__(
        self,
        redis: redis.asyncio.Redis,
        stream_name: str = DEFAULT_STREAM,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        partitions: int | None = None,
        partition_key: PartitionKeyFunc = default_ordering_key,
    ) -> None:
        super().__init__(stream_name, maxlen, approximate, partitions, partition_key)
        self.redis = redis

    async def add_event(self, event_type: str, data: Mapping[str, Any]) -> str:
        """Append one event (XADD) and return its entry id.

        Raises:
            ValueError: empty type, a ``codex.`` key, or a ``type`` key naming another type.
            TypeError: a value that JSON cannot encode.
        """
        return text(await self.redis.xadd(**self._xadd_args(event_type, data)))

    async def add_events(self, events: Iterable[Event]) -> list[str]:
        """Append many events in one round trip (pipelined XADDs); return their ids in order.

        Every event is encoded before anything is sent, so a bad one sends none.
        """
        calls = [self._xadd_args(event_type, data) for event_type, data in events]
        if not calls:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.xadd(**call)
            return [text(entry_id) for entry_id in await pipe.execute()]


class SyncStreamProducer(_ProducerBase):
    """``StreamProducer`` for synchronous code (a Django view, a Celery task): same shape.

    Example:
        ```python
        producer = SyncStreamProducer(redis.Redis.from_url(settings.REDIS_URL))
        producer.add_event("order.paid", {"chat_id": order.chat_id, "total": 1250})
        ```
    """

    def __init__(
        self,
        redis: redis.Redis,
        stream_name: str = DEFAULT_STREAM,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        partitions: int | None = None,
        partition_key: PartitionKeyFunc = default_ordering_key,
    ) -> None:
        super().__init__(stream_name, maxlen, approximate, partitions, partition_key)
        self.redis = redis

    def add_event(self, event_type: str, data: Mapping[str, Any]) -> str:
        """Append one event (XADD) and return its entry id."""
        # redis-py types sync and async replies alike ("Awaitable[Any] | Any")
        return text(cast("bytes | str", self.redis.xadd(**self._xadd_args(event_type, data))))

    def add_events(self, events: Iterable[Event]) -> list[str]:
        """Append many events in one round trip; return their ids in order."""
        calls = [self._xadd_args(event_type, data) for event_type, data in events]
        if not calls:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.xadd(**call)
            return [text(entry_id) for entry_id in pipe.execute()]
