"""``RedisSentinelServer``: a primary, its replicas and Sentinels, all throwaway, for tests.

Every process is the same ``redis-server`` binary (Sentinels run it with ``--sentinel``).
The timings are short, so a failover completes in a few seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, Self

from codex_bot.testing.process import HOST, ServerGroup, ServerProcess
from codex_bot.testing.redis_server import RedisServerError, find_redis_server, free_port

_PAUSED_AUTH = "codex-bot-replication-paused"
"""A ``masterauth`` the primary (which has no password) refuses: the replica cannot sync."""


class RedisSentinelServer(ServerGroup):
    """A primary with ``replicas`` replicas, monitored by ``sentinels`` Sentinels.

    Point a client at it with
    ``redis.asyncio.sentinel.Sentinel(setup.sentinel_addresses).master_for(setup.master_name)``.

    Args:
        replicas: Replicas of the primary.
        sentinels: Sentinels; the quorum is a majority of them.
        master_name: The name the Sentinels monitor the primary under.
        binary: Path of redis-server; found with ``find_redis_server()`` when None.
        persistent: Keep an append-only file per data node, so a restart keeps its data.
        down_after_ms: Sentinel's ``down-after-milliseconds``: how soon a silent primary
            counts as down. Keep it well above 1000: after a failover a Sentinel may take
            up to 1 s to connect to the new primary, and would count it as down too.
        failover_timeout_ms: Sentinel's ``failover-timeout``; Sentinels also wait twice
            this long before failing the same primary over again on their own.
        startup_timeout: Seconds to wait for everything to start and agree.
    """

    ready_means = (
        "all to run, agree on the primary, and every replica to sync with it and acknowledge "
        "its writes"
    )

    def __init__(
        self,
        replicas: int = 1,
        sentinels: int = 1,
        *,
        master_name: str = "mymaster",
        binary: str | None = None,
        persistent: bool = False,
        down_after_ms: int = 2000,
        failover_timeout_ms: int = 2000,
        startup_timeout: float = 30.0,
    ) -> None:
        if min(replicas, sentinels) < 1:
            msg = f"need at least one replica and one sentinel: {replicas}, {sentinels}"
            raise ValueError(msg)
        super().__init__("codex-sentinel-", startup_timeout)
        self.binary = binary or find_redis_server()
        self.master_name = master_name
        data = [
            'save ""',
            f"appendonly {'yes' if persistent else 'no'}",
            "appendfsync always",
            "repl-diskless-sync-delay 0",  # 7.0 waits 5 s for more replicas before a sync
        ]
        primary = free_port()
        self.nodes: tuple[ServerProcess, ...] = tuple(
            ServerProcess(self.binary, port, self._root / str(port), config)
            for port, config in [
                (primary, data),
                *((free_port(), [*data, f"replicaof {HOST} {primary}"]) for _ in range(replicas)),
            ]
        )
        """The data nodes; ``nodes[0]`` is the first primary."""
        watch = [
            f"sentinel monitor {master_name} {HOST} {primary} {sentinels // 2 + 1}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
        ]
        self.sentinels: tuple[ServerProcess, ...] = tuple(
            ServerProcess(self.binary, port, self._root / f"sentinel-{port}", watch, sentinel=True)
            for port in (free_port() for _ in range(sentinels))
        )
        for process in (*self.nodes, *self.sentinels):
            self._add(process)

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every Sentinel, for ``redis.asyncio.sentinel.Sentinel``."""
        return [sentinel.address for sentinel in self.sentinels]

    def start(self) -> Self:
        """Start the data nodes, then the Sentinels; wait until all agree and replicas sync.

        Raises:
            RedisServerError: A process did not start, or they did not agree in time.
        """
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_until_up()
        # Sentinels learn of replicas from the primary's INFO, which they ask for every
        # 10 s: started before the replicas are linked, they would miss them that long.
        for replica in self.nodes[1:]:
            self._wait(functools.partial(_linked, replica, self.nodes[0]), f"{replica} to sync")
        for sentinel in self.sentinels:
            sentinel.start(wait=False)
        for sentinel in self.sentinels:
            sentinel.wait_until_up()
        self.wait_until_ready()
        return self

    def primary(self) -> ServerProcess:
        """The data node a running Sentinel names as the primary now.

        Raises:
            RedisServerError: No Sentinel runs, or one names an address that is not ours.
        """
        sentinel = next((s for s in self.sentinels if s.running), None)
        if sentinel is None:
            msg = "no sentinel is running"
            raise RedisServerError(msg)
        return self._node(_named_primary(sentinel, self.master_name))

    def replicas(self) -> list[ServerProcess]:
        """The data nodes other than :meth:`primary`, running or not."""
        primary = self.primary()
        return [node for node in self.nodes if node is not primary]

    def failover(self, timeout: float | None = None) -> ServerProcess:
        """Fail over now (SENTINEL FAILOVER) and make the old primary a replica of the new.

        Sentinels would demote the old primary only some 20 s later, and until then it
        still takes writes from clients connected to it; this sends it the REPLICAOF they
        would send at once. A client still connected to it gets READONLY on its next write
        (redis-py's Sentinel clients then reconnect to the new primary).

        Returns:
            The new primary.

        Raises:
            RedisServerError: The Sentinels did not name a new primary in time.
        """
        old = self.primary()
        sentinel = next(s for s in self.sentinels if s.running)
        with sentinel.client() as client:
            client.execute_command("SENTINEL", "FAILOVER", self.master_name)
        new = self.wait_for_failover(old, timeout)
        with old.client() as client:
            client.replicaof(HOST, new.port)
        return new

    def wait_for_failover(self, old: ServerProcess, timeout: float | None = None) -> ServerProcess:
        """Wait until every running Sentinel names a primary other than ``old``, and it is one.

        Args:
            old: The primary before the failover (e.g. the one a test killed).
            timeout: Seconds; ``startup_timeout`` when None.

        Returns:
            The new primary.

        Raises:
            RedisServerError: No new primary in time.
        """

        def promoted() -> bool:
            running = [s for s in self.sentinels if s.running]
            named = {_named_primary(sentinel, self.master_name) for sentinel in running}
            if len(named) != 1 or old.port in named:
                return False
            return str(_replication(self._node(named.pop()))["role"]) == "master"

        self._wait(promoted, f"a primary other than {old}", timeout)
        return self.primary()

    def restart(self, node: ServerProcess, *, wait: bool = True) -> None:
        """Stop ``node`` if it runs and start it again, as a replica unless it is the primary.

        A failed primary comes back as a replica of the current one, as an operator would
        bring it back (Sentinels would take some seconds more to convert it); a data node
        comes back with its replication no longer paused.

        Args:
            node: One of :attr:`nodes` or :attr:`sentinels`.
            wait: Wait until :meth:`is_ready`.
        """
        node.stop()
        if node in self.sentinels:
            node.start()
        elif (primary := self.primary()) is node:
            node.start("--masterauth", "")
        else:
            node.start("--masterauth", "", "--replicaof", HOST, str(primary.port))
        if wait:
            self.wait_until_ready()

    def pause_replication(self, replica: ServerProcess) -> None:
        """Cut ``replica`` off its primary until :meth:`resume_replication` or a restart.

        Writes the primary acknowledges from now on do not reach ``replica``: fail over to
        it and they are lost. The replica's link drops (CLIENT KILL TYPE master) and it
        cannot re-sync, because it now presents a password (``masterauth``) the primary
        refuses; this works on Redis 6.2 and 7.

        Raises:
            ValueError: ``replica`` is the primary.
        """
        if replica is self.primary():
            msg = f"{replica} is the primary, not a replica"
            raise ValueError(msg)
        with replica.client() as client:
            client.config_set("masterauth", _PAUSED_AUTH)
            client.client_kill_filter(_type="master")

    def resume_replication(self, replica: ServerProcess, *, wait: bool = True) -> None:
        """Let ``replica`` sync with its primary again (also after it was promoted).

        Args:
            replica: A node :meth:`pause_replication` was called on.
            wait: Wait until its replication link is up, if it is a replica.
        """
        with replica.client() as client:
            client.config_set("masterauth", "")
        if wait and replica is not (primary := self.primary()):
            self._wait(functools.partial(_linked, replica, primary), f"{replica} to sync")

    def _problems(self) -> Iterator[str]:
        if stopped := [p for p in (*self.nodes, *self.sentinels) if not p.running]:
            yield f"not running: {stopped}"
            return
        named = {_named_primary(sentinel, self.master_name) for sentinel in self.sentinels}
        if len(named) != 1:
            yield f"the sentinels name different primaries: {named}"
            return
        primary = self._node(named.pop())
        replicas = [node for node in self.nodes if node is not primary]
        if (role := _replication(primary)["role"]) != "master":
            yield f"{primary} is named the primary but is a {role}"
        for sentinel in self.sentinels:
            yield from self._sentinel_problems(sentinel, replicas)
        for replica in replicas:
            if not _linked(replica, primary):
                yield f"{replica} does not sync with {primary}: {_replication(replica)}"
        # a link that is up on the replica's side does not mean the primary streams to it yet:
        # after a diskless sync it waits for the replica's first ACK (up to a second), and
        # until then a WAIT (a producer's wait_replicas) times out
        if replicas and not _acknowledged(primary, len(replicas)):
            yield f"the replicas of {primary} do not acknowledge its writes yet"

    def _sentinel_problems(
        self, sentinel: ServerProcess, replicas: Sequence[ServerProcess]
    ) -> Iterator[str]:
        with sentinel.client() as client:
            master = _pairs(client.execute_command("SENTINEL", "MASTER", self.master_name))
            known = client.execute_command("SENTINEL", "REPLICAS", self.master_name)
        others = int(master["num-other-sentinels"])
        if master["flags"] != "master" or others != len(self.sentinels) - 1:
            yield f"{sentinel} sees the primary as {master['flags']} with {others} sentinels"
        # Only what a failover needs: the replicas' link states come from INFO they answer
        # every 10 s, and are checked on the replicas themselves.
        usable = {int(r["port"]) for r in map(_pairs, known) if r["flags"] == "slave"}
        if missing := [replica for replica in replicas if replica.port not in usable]:
            yield f"{sentinel} does not see {missing} as usable replicas"

    def _node(self, port: int) -> ServerProcess:
        for node in self.nodes:
            if node.port == port:
                return node
        msg = f"the sentinels name {HOST}:{port}, which is not a node of this set-up"
        raise RedisServerError(msg)


_READY_CHANNEL = "__codex_testing__:ready"
"""What the readiness check publishes: a write that reaches the replicas, and no key."""


def _named_primary(sentinel: ServerProcess, master_name: str) -> int:
    """The primary's port as SENTINEL MASTER gives it (redis-py's clients read the same).

    Until a failover ends with ``+switch-master`` this is still the old primary, although
    GET-MASTER-ADDR-BY-NAME already names the promoted replica.
    """
    with sentinel.client() as client:
        master = _pairs(client.execute_command("SENTINEL", "MASTER", master_name))
    return int(master["port"])


def _linked(replica: ServerProcess, primary: ServerProcess) -> bool:
    """Whether ``replica`` replicates ``primary`` over a link that is up."""
    info = _replication(replica)
    return (info.get("master_port"), info.get("master_link_status")) == (primary.port, "up")


def _acknowledged(primary: ServerProcess, replicas: int) -> bool:
    """Whether ``replicas`` replicas acknowledge a write to ``primary`` within 100 ms."""
    with primary.client() as client:
        client.publish(_READY_CHANNEL, "")  # replicated: the WAIT below waits for it
        return int(client.wait(replicas, 100)) >= replicas


def _replication(node: ServerProcess) -> dict[str, Any]:
    with node.client() as client:
        return dict(client.info("replication"))


def _pairs(reply: Sequence[Any]) -> dict[str, str]:
    """A flat ``[name, value, ...]`` Sentinel reply as a dict."""
    return {str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply), 2)}
