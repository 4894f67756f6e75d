"""``StreamProducer`` and ``SyncStreamProducer``: what backend services push events with.

Both retry the failures a failover brings (the primary gone, not yet replaced, demoted, still
loading) with a bounded backoff, and can wait until replicas confirm the writes (WAIT).
Importing this module loads redis-py only: no aiogram, no arq.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar, cast

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterPipeline as AsyncClusterPipeline

from codex_bot.redis.codec import encode_event
from codex_bot.redis.constants import DEFAULT_STREAM
from codex_bot.redis.partitioning import (
    PartitionKeyFunc,
    check_partitioned_name,
    default_ordering_key,
    partition_of,
    partition_stream,
)
from codex_bot.redis.push import (
    ATTEMPT_ERRORS,
    DEFAULT_WAIT_TIMEOUT_MS,
    Group,
    Push,
    PushOutage,
    PushPolicy,
    Write,
    xadd_command,
)

Event = tuple[str, Mapping[str, Any]]
"""``(event_type, data)`` for ``add_events``."""
NodeOf = Callable[[str], Any]
"""``stream -> node``: the Redis Cluster node a stream's XADD and its WAIT go to."""


ClientT = TypeVar("ClientT")
_CLUSTER_CLIENTS = (redis.asyncio.RedisCluster, redis.RedisCluster)


class _ProducerBase(Generic[ClientT]):
    """What both producers share; the docstring of ``StreamProducer`` has the arguments."""

    def __init__(
        self,
        redis: ClientT,
        stream_name: str = DEFAULT_STREAM,
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        partitions: int | None = None,
        partition_key: PartitionKeyFunc = default_ordering_key,
        wait_replicas: int = 0,
        wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS,
        retries: int = 5,
        retry_backoff: float = 0.1,
        retry_backoff_max: float = 1.0,
    ) -> None:
        policy = PushPolicy(
            wait_replicas, wait_timeout_ms, retries, retry_backoff, retry_backoff_max
        )
        client: Any = redis
        if maxlen is not None and maxlen < 1:
            msg = "maxlen must be positive or None"
            raise ValueError(msg)
        if partitions is not None:
            check_partitioned_name(stream_name, partitions)
        self._cluster = isinstance(client, _CLUSTER_CLIENTS)
        policy.check_socket_timeout(_socket_timeout(client, self._cluster))
        self.stream_name = stream_name
        self.maxlen = maxlen
        self.approximate = approximate
        self.partitions = partitions
        self.partition_key = partition_key
        self.policy = policy
        self._spread = itertools.count()  # events without a key go round the partitions
        self._outage = PushOutage(stream_name)
        self.redis = redis

    @property
    def wait_replicas(self) -> int:
        """Replicas every write must reach before it counts (0: no WAIT)."""
        return self.policy.wait_replicas

    def stream_for(self, data: Mapping[str, Any]) -> str:
        """The stream an event with this data goes to: its partition, with ``partitions``."""
        if self.partitions is None:
            return self.stream_name
        key = self.partition_key(data)
        index = next(self._spread) if key is None else partition_of(key, self.partitions)
        return partition_stream(self.stream_name, index % self.partitions)

    def _push(self, events: Iterable[Event]) -> Push:
        """Encode every event first, so a bad one sends none."""
        writes = []
        for position, (event_type, data) in enumerate(events):
            stream = self.stream_for(data)
            fields = encode_event(event_type, data)
            command = xadd_command(stream, fields, self.maxlen, self.approximate)
            writes.append(Write(position, stream, command))
        return Push(writes, self.policy, self._outage)

    @property
    def _targeted(self) -> bool:
        """Whether each XADD and its WAIT go to a node named here (a cluster client WAITs)."""
        return self._cluster and bool(self.policy.wait_replicas)


def _socket_timeout(client: Any, cluster: bool) -> float | None:
    if cluster:
        kwargs = client.get_connection_kwargs()
    else:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    timeout = kwargs.get("socket_timeout")
    return float(timeout) if timeout else None


class StreamProducer(_ProducerBase[redis.asyncio.Redis | redis.asyncio.RedisCluster]):
    """Pushes events onto a Redis Stream from async code (``redis.asyncio``).

    Values keep their JSON types through the stream: numbers, booleans, nulls, lists and
    dicts arrive in the handler as they were sent.

    Args:
        redis: The client: ``Redis`` (also from ``Sentinel.master_for``) or ``RedisCluster``.
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
        wait_replicas: After the XADDs, in the same round trip, ``WAIT`` until this many
            replicas have them, and raise ``ReplicationError`` when fewer did in time. With a
            Redis Cluster client each shard written to gets its own WAIT. 0: no WAIT.
        wait_timeout_ms: How long a WAIT may block (at least 1). The default, 500, leaves a
            loaded replica room (WAIT asks replicas at once; a healthy one answers within a
            round trip) and bounds a request's wait while none answers. It must stay below
            80% of the client's ``socket_timeout``.
        retries: Attempts after the first when Redis cannot be reached, times out, is loading,
            has no primary yet, answers READONLY (a demoted primary) or NOREPLICAS, or moved
            a slot.
        retry_backoff: Seconds before the first retry; each next wait doubles...
        retry_backoff_max: ...up to this. With the defaults the waits add up to 2.5 s, plus
            6 attempts, each bounded by the client's ``socket_connect_timeout`` and
            ``socket_timeout``: set those, or an unreachable host holds an attempt as long as
            the OS lets a connect hang.

    A retried write may land twice: the first XADD can have reached Redis before its
    connection broke, and so can a batch whose WAIT reply was lost. The bot then handles a
    second entry with the same payload (and its own origin id): put an id of your own in the
    payload (``event_id``) and let handlers skip ids they have seen.

    Example:
        ```python
        producer = StreamProducer(Redis.from_url("redis://localhost"), "bot_events")
        entry_id = await producer.add_event("booking.confirmed", {"chat_id": 42, "slot": "10:00"})
        ```
    """

    async def add_event(self, event_type: str, data: Mapping[str, Any]) -> str:
        """Append one event (XADD, and WAIT with ``wait_replicas``) and return its entry id.

        Raises:
            ValueError: empty type, a ``codex.`` key, or a ``type`` key naming another type.
            TypeError: a value that JSON cannot encode.
            ReplicationError: Fewer than ``wait_replicas`` replicas confirmed it in time.
            redis.exceptions.RedisError: Redis still failed after ``retries`` retries, or
                refused the write for good (e.g. the key holds another type).
        """
        [entry_id] = await self._run(self._push([(event_type, data)]))
        return entry_id

    async def add_events(self, events: Iterable[Event]) -> list[str]:
        """Append many events in one round trip (pipelined XADDs); return their ids in order.

        Every event is encoded before anything is sent, so a bad one sends none. With
        ``wait_replicas`` one WAIT follows the XADDs (one per Redis Cluster shard written to).

        Raises:
            ValueError: As ``add_event``.
            TypeError: As ``add_event``.
            ReplicationError: Fewer than ``wait_replicas`` replicas confirmed some events;
                its ``entry_ids`` are all the events' ids, every one written.
            redis.exceptions.RedisError: As ``add_event``; some events may have been written.
        """
        push = self._push(events)
        return await self._run(push) if push.pending else []

    async def _run(self, push: Push) -> list[str]:
        while (delay := push.next_delay()) is not None:
            if delay:
                await asyncio.sleep(delay)
            try:
                node_of = await self._node_of(push.retrying) if self._cluster else None
                groups = push.commands(node_of)
                if len(groups) == 1:
                    replies: list[list[Any] | BaseException] = [await self._send(groups[0])]
                else:  # a pipeline per shard: one shard down leaves the others' replies whole
                    replies = await asyncio.gather(*map(self._send, groups), return_exceptions=True)
                push.settle(groups, replies)
            except ATTEMPT_ERRORS as error:
                push.failed(error)
        return push.result()

    async def _node_of(self, refresh: bool) -> NodeOf:
        cluster = cast("redis.asyncio.RedisCluster", self.redis)
        await cluster.initialize()  # a no-op once done
        if refresh:  # the failure may have been a moved slot or a master failed over
            await cluster.nodes_manager.initialize()
        return cluster.get_node_from_key

    async def _send(self, group: Group) -> list[Any]:
        if len(group.commands) == 1:
            return [await self.redis.execute_command(*group.commands[0].args)]
        target = {"target_nodes": group.node} if self._targeted else {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for command in group.commands:
                pipe.execute_command(*command.args, **target)
            if isinstance(pipe, AsyncClusterPipeline):
                # A WAIT speaks only for its own connection: a redirected XADD would run on
                # another one, so with a WAIT it fails here and is retried instead.
                return await pipe.execute(
                    raise_on_error=False, allow_redirections=not self._targeted
                )
            return await pipe.execute(raise_on_error=False)


class SyncStreamProducer(_ProducerBase[redis.Redis | redis.RedisCluster]):
    """``StreamProducer`` for synchronous code (a Django view, a Celery task): same shape.

    The same arguments, retries, WAIT and ``ReplicationError``, over ``redis.Redis`` (also
    from ``redis.sentinel.Sentinel.master_for``) or ``redis.RedisCluster``.

    Example:
        ```python
        producer = SyncStreamProducer(redis.Redis.from_url(settings.REDIS_URL))
        producer.add_event("order.paid", {"chat_id": order.chat_id, "total": 1250})
        ```
    """

    def add_event(self, event_type: str, data: Mapping[str, Any]) -> str:
        """Append one event (XADD, and WAIT with ``wait_replicas``) and return its entry id.

        Raises:
            ValueError: As ``StreamProducer.add_event``.
            TypeError: As ``StreamProducer.add_event``.
            ReplicationError: Fewer than ``wait_replicas`` replicas confirmed it in time.
            redis.exceptions.RedisError: As ``StreamProducer.add_event``.
        """
        [entry_id] = self._run(self._push([(event_type, data)]))
        return entry_id

    def add_events(self, events: Iterable[Event]) -> list[str]:
        """Append many events in one round trip; return their ids in order.

        Raises:
            ValueError: As ``StreamProducer.add_events``.
            TypeError: As ``StreamProducer.add_events``.
            ReplicationError: As ``StreamProducer.add_events``.
            redis.exceptions.RedisError: As ``StreamProducer.add_events``.
        """
        push = self._push(events)
        return self._run(push) if push.pending else []

    def _run(self, push: Push) -> list[str]:
        while (delay := push.next_delay()) is not None:
            if delay:
                time.sleep(delay)
            try:
                groups = push.commands(self._node_of(push.retrying) if self._cluster else None)
                push.settle(groups, [self._reply(group) for group in groups])
            except ATTEMPT_ERRORS as error:
                push.failed(error)
        return push.result()

    def _node_of(self, refresh: bool) -> NodeOf:
        cluster = cast("redis.RedisCluster", self.redis)
        if refresh:  # the failure may have been a moved slot or a master failed over
            nodes: Any = cluster.nodes_manager  # redis-py leaves the sync cluster untyped
            nodes.initialize()
        return cluster.get_node_from_key

    def _reply(self, group: Group) -> list[Any] | BaseException:
        """The group's replies, or the error that failed it (one shard down, not all)."""
        try:
            return self._send(group)
        except ATTEMPT_ERRORS as error:
            return error

    def _send(self, group: Group) -> list[Any]:
        if len(group.commands) == 1:
            execute: Callable[..., Any] = self.redis.execute_command  # untyped in redis-py
            return [execute(*group.commands[0].args)]
        target = {"target_nodes": group.node} if self._targeted else {}
        pipe: Any  # the sync ClusterPipeline is untyped in redis-py
        with self.redis.pipeline(transaction=False) as pipe:
            for command in group.commands:
                pipe.execute_command(*command.args, **target)
            if self._targeted:
                # As in StreamProducer._send; execute() cannot turn redirections off here.
                replies = pipe.send_cluster_commands(
                    pipe.command_stack, raise_on_error=False, allow_redirections=False
                )
            else:
                replies = pipe.execute(raise_on_error=False)
            return list(replies)
