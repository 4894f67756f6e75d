"""``Push``: one producer call's XADDs in flight, the WAITs after them, what is left to retry.

Without I/O: the async and the sync producer send each group ``commands()`` lists in one
pipeline (a group per Redis Cluster shard, one for any other client) and hand the replies to
``settle()``, until every event is written or the retries are spent. A WAIT confirms only
the writes made before it on its own connection, so each group ends with its WAIT, and a
write whose WAIT could not be read is written again.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NamedTuple

from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from codex_bot.redis.backoff import Backoff
from codex_bot.redis.codec import text
from codex_bot.redis.exceptions import ReplicationError

logger = logging.getLogger("codex_bot.redis.producer")

DEFAULT_WAIT_TIMEOUT_MS = 500
"""A healthy replica confirms within a round trip (WAIT asks it at once); 500 ms leaves room
for a loaded one and bounds what a request waits while no replica answers."""
WAIT_MARGIN = 0.8
"""Share of the client's socket_timeout a WAIT may block: beyond it the client gives up first,
and the retry writes the events a second time."""

_TRANSIENT = (
    RedisConnectionError,  # also MasterNotFoundError, BusyLoadingError (LOADING)
    RedisTimeoutError,
    ReadOnlyError,  # a demoted primary
    ClusterDownError,  # also MASTERDOWN
    TryAgainError,
    AskError,  # also MOVED: a slot moved or its master failed over
    RedisClusterException,  # also a slot no master serves yet
)
"""What a failover looks like from a client: worth another attempt after a pause."""
_FATAL = (AuthenticationError, AuthorizationError)
ATTEMPT_ERRORS = (RedisError, RedisClusterException)
"""What one attempt may raise: retried when transient, raised at once otherwise."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away by itself (a failover, a restart, a moved slot)."""
    if isinstance(error, ResponseError) and str(error).startswith("NOREPLICAS"):
        return True  # min-replicas-to-write: a primary cut off from its replicas, until demoted
    return isinstance(error, _TRANSIENT) and not isinstance(error, _FATAL)


@dataclass(frozen=True, slots=True)
class PushPolicy:
    """How a producer confirms its writes and how long it keeps trying.

    Raises:
        ValueError: A negative count, or a WAIT timeout below 1 ms (0 would block forever).
    """

    wait_replicas: int = 0
    wait_timeout_ms: int = DEFAULT_WAIT_TIMEOUT_MS
    retries: int = 5
    retry_backoff: float = 0.1
    retry_backoff_max: float = 1.0

    def __post_init__(self) -> None:
        if self.wait_replicas < 0 or self.retries < 0:
            msg = f"wait_replicas and retries must not be negative: {self}"
            raise ValueError(msg)
        if self.wait_timeout_ms < 1:
            msg = f"wait_timeout_ms must be at least 1 (WAIT 0 blocks forever): {self}"
            raise ValueError(msg)
        if self.retry_backoff < 0 or self.retry_backoff_max < 0:
            msg = f"retry_backoff and retry_backoff_max must not be negative: {self}"
            raise ValueError(msg)

    def check_socket_timeout(self, socket_timeout: float | None) -> None:
        """Refuse a WAIT that could outlast the client's ``socket_timeout``.

        Raises:
            ValueError: ``wait_timeout_ms`` is above 80% of ``socket_timeout``.
        """
        if (
            self.wait_replicas
            and socket_timeout
            and (self.wait_timeout_ms > socket_timeout * 1000 * WAIT_MARGIN)
        ):
            msg = (
                f"wait_timeout_ms={self.wait_timeout_ms} must stay below 80% of the client's "
                f"socket_timeout ({socket_timeout}s), or a WAIT that times out on the server "
                "times the connection out first"
            )
            raise ValueError(msg)


class Write(NamedTuple):
    """One event's XADD: its place in the call, its stream and the command."""

    position: int
    stream: str
    args: tuple[Any, ...]


class Command(NamedTuple):
    """One command of an attempt's pipeline."""

    args: tuple[Any, ...]
    write: Write | None
    """The write it is; None for a WAIT."""


class Group(NamedTuple):
    """The commands of an attempt that go to one node, on one connection."""

    node: Any
    """The Redis Cluster node of their streams; None with any other client."""
    commands: list[Command]


def xadd_command(
    stream: str, fields: Mapping[str, str], maxlen: int | None, approximate: bool
) -> tuple[Any, ...]:
    """``XADD stream [MAXLEN [~] n] * field value ...`` as a command's arguments."""
    trim: tuple[Any, ...] = ()
    if maxlen is not None:
        trim = ("MAXLEN", "~", maxlen) if approximate else ("MAXLEN", maxlen)
    return ("XADD", stream, *trim, "*", *itertools.chain.from_iterable(fields.items()))


class PushOutage:
    """Whether a producer's pushes reach Redis; each outage is logged once as it starts and ends.

    Args:
        stream_name: The stream the log lines name.
    """

    def __init__(self, stream_name: str) -> None:
        self.stream_name = stream_name
        self.since: float | None = None

    def failed(self, error: BaseException) -> None:
        """An attempt failed and will be retried: log it if it starts an outage."""
        if self.since is not None:
            logger.debug("pushing to %s still fails: %r", self.stream_name, error)
            return
        self.since = time.monotonic()
        logger.warning("pushing to %s failed, retrying with backoff: %r", self.stream_name, error)

    def recovered(self) -> None:
        """An attempt went through: end the outage, if there was one."""
        if self.since is not None:
            seconds, self.since = time.monotonic() - self.since, None
            logger.warning("pushing to %s works again after %.1fs", self.stream_name, seconds)


class Push:
    """One ``add_event`` or ``add_events`` call, until its events are written or retries spent.

    Args:
        writes: The XADDs, in the caller's order.
        policy: WAIT and retry settings.
        outage: The producer's outage log.
    """

    def __init__(self, writes: Sequence[Write], policy: PushPolicy, outage: PushOutage) -> None:
        self.policy = policy
        self.outage = outage
        self.pending = list(writes)
        self.ids = [""] * len(writes)
        self.attempts = 0
        self.error: BaseException | None = None
        """The last transient error, raised when the retries run out."""
        self._backoff: Backoff | None = None
        self._short: dict[int, int] = {}
        """Position of a write -> the replicas its WAIT confirmed, when fewer than wanted."""

    @property
    def retrying(self) -> bool:
        """Whether an attempt failed before this one."""
        return self.attempts > 1

    def next_delay(self) -> float | None:
        """Seconds to wait before the next attempt; None when none is left to make."""
        if not self.pending or self.attempts > self.policy.retries:
            return None
        self.attempts += 1
        if not self.retrying:
            return 0.0
        if self._backoff is None:
            self._backoff = Backoff(self.policy.retry_backoff_max, self.policy.retry_backoff)
        return self._backoff.next_delay()

    def commands(self, node_of: Callable[[str], Any] | None = None) -> list[Group]:
        """The pending XADDs grouped by the node they go to, each group ending with its WAIT.

        Args:
            node_of: ``stream -> node`` for a Redis Cluster client; None: one group.
        """
        groups: dict[str | None, Group] = {}
        for write in self.pending:
            node = None if node_of is None else node_of(write.stream)
            key = None if node is None else str(node.name)
            groups.setdefault(key, Group(node, [])).commands.append(Command(write.args, write))
        if self.policy.wait_replicas:
            wait = ("WAIT", self.policy.wait_replicas, self.policy.wait_timeout_ms)
            for group in groups.values():
                group.commands.append(Command(wait, None))
        return list(groups.values())

    def settle(
        self, groups: Sequence[Group], replies: Sequence[Sequence[Any] | BaseException]
    ) -> None:
        """Take one attempt's replies, a list per group or the error that failed the group.

        A write that failed transiently stays pending, and so does one whose WAIT failed (it
        is written again). On one connection, once a write fails the later ones on the same
        slot fail too, so the retried events keep their order within a stream.

        Raises:
            RedisError: A reply no retry can fix (a key of another type, out of memory...).
        """
        pending: list[Write] = []
        for group, reply in zip(groups, replies, strict=True):
            if isinstance(reply, BaseException):
                self._failed(reply)
                pending += (command.write for command in group.commands if command.write)
            else:
                pending += self._settle_group(group.commands, reply)
        self.pending = sorted(pending, key=attrgetter("position"))
        if self.pending and self.error is not None:
            self.outage.failed(self.error)
        else:
            self.outage.recovered()

    def _settle_group(self, commands: Sequence[Command], replies: Sequence[Any]) -> list[Write]:
        """The writes of one group left pending; records ids and short confirmations."""
        pending: list[Write] = []
        landed: list[Write] = []
        for command, reply in zip(commands, replies, strict=True):
            failed = isinstance(reply, BaseException)
            if failed:
                self._failed(reply)
            if command.write is None:  # a WAIT: it speaks for the writes before it
                if failed:
                    pending += landed
                elif int(reply) < self.policy.wait_replicas:
                    self._short.update(dict.fromkeys((w.position for w in landed), int(reply)))
            elif failed:
                pending.append(command.write)
            else:
                self.ids[command.write.position] = text(reply)
                landed.append(command.write)
        return pending

    def failed(self, error: BaseException) -> None:
        """The attempt failed as a whole: any of its writes may or may not have landed.

        Raises:
            BaseException: ``error`` itself, unless it is transient.
        """
        self._failed(error)
        self.outage.failed(error)

    def _failed(self, error: BaseException) -> None:
        if not is_transient(error):
            raise error
        self.error = error

    def result(self) -> list[str]:
        """The entry ids, in the caller's order.

        Raises:
            RedisError: The last transient error, when the retries ran out first.
            ReplicationError: Fewer replicas than ``wait_replicas`` confirmed some writes.
        """
        if self.pending and self.error is not None:
            raise self.error
        if self._short:
            raise ReplicationError(
                min(self._short.values()),
                self.policy.wait_replicas,
                self.ids,
                [self.ids[position] for position in sorted(self._short)],
            )
        return self.ids
