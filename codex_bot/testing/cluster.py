"""``RedisClusterServer``: a real Redis Cluster of throwaway redis-servers, for tests.

The cluster is formed from Python (ADDSLOTS, MEET, REPLICATE), as ``redis-cli --cluster
create`` would, so only the ``redis-server`` binary is needed.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Self

from redis.crc import key_slot
from redis.exceptions import RedisError

from codex_bot.testing.cluster_node import (
    BAD_FLAGS,
    NODES_FILE,
    SLOTS,
    ClusterNode,
    KnownNode,
    Slots,
    cluster_ports,
    newest_layout,
)
from codex_bot.testing.process import HOST, ServerGroup
from codex_bot.testing.redis_server import RedisServerError, find_redis_server

_SETTLE_S = 5.0
"""How long ``shards()`` waits for the running nodes to agree after a change."""


@dataclass(frozen=True, slots=True)
class ClusterShard:
    """A master, its replicas and the slot ranges it serves, as the cluster reports them."""

    master: ClusterNode
    replicas: tuple[ClusterNode, ...]
    slots: Slots
    """Inclusive ``(first, last)`` ranges."""

    def serves(self, slot: int) -> bool:
        """Whether ``slot`` is one of this shard's."""
        return any(first <= slot <= last for first, last in self.slots)


class RedisClusterServer(ServerGroup):
    """A Redis Cluster of ``masters`` shards on 127.0.0.1, each with its own temp dir.

    Args:
        masters: Number of shards; the 16384 slots are split evenly between them.
        replicas: Replicas per master.
        binary: Path of redis-server; found with ``find_redis_server()`` when None.
        persistent: Keep an append-only file per node, so a restart keeps its data.
        node_timeout_ms: ``cluster-node-timeout``: how soon a silent node is marked failing.
        require_full_coverage: When False, the other shards keep serving while one is down.
        startup_timeout: Seconds to wait for the nodes to start and the cluster to form.

    Example:
        ```python
        with RedisClusterServer() as cluster:
            redis = redis.asyncio.RedisCluster.from_url(cluster.url)
        ```
    """

    ready_means = "every node to run, report cluster_state:ok and agree on the slot map"

    def __init__(
        self,
        masters: int = 3,
        *,
        replicas: int = 0,
        binary: str | None = None,
        persistent: bool = False,
        node_timeout_ms: int = 1000,
        require_full_coverage: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        if masters < 1 or replicas < 0:
            msg = f"need at least one master and no negative replicas: {masters}, {replicas}"
            raise ValueError(msg)
        super().__init__("codex-cluster-", startup_timeout)
        self.binary = binary or find_redis_server()
        config = [
            "cluster-enabled yes",
            f"cluster-config-file {NODES_FILE}",
            f"cluster-node-timeout {node_timeout_ms}",
            f"cluster-announce-ip {HOST}",
            f"cluster-require-full-coverage {'yes' if require_full_coverage else 'no'}",
            'save ""',
            f"appendonly {'yes' if persistent else 'no'}",
            "appendfsync always",
            "repl-diskless-sync-delay 0",  # 7.0 waits 5 s for more replicas before a sync
        ]
        ports = cluster_ports(masters * (1 + replicas))
        self.nodes: tuple[ClusterNode, ...] = tuple(
            ClusterNode(self.binary, port, self._root / str(port), config) for port in ports
        )
        """Every node; the first ``masters`` started as masters, the rest as their replicas."""
        for node in self.nodes:
            self._add(node)
        self._masters = masters

    @property
    def url(self) -> str:
        """A startup node's URL, for ``redis.asyncio.RedisCluster.from_url``."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        """Every node's URL."""
        return [node.url for node in self.nodes]

    def start(self) -> Self:
        """Start the nodes, form the cluster and wait until every node reports it ok.

        Raises:
            RedisServerError: A node did not start, or the cluster did not form in time.
        """
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_until_up()
            with node.client() as client:
                node.node_id = str(client.execute_command("CLUSTER", "MYID"))
        masters, replicas = self.nodes[: self._masters], self.nodes[self._masters :]
        for epoch, node in enumerate(self.nodes, start=1):
            with node.client() as client:
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for index, node in enumerate(masters):
            first, last = index * SLOTS // len(masters), (index + 1) * SLOTS // len(masters) - 1
            node.add_slots(first, last)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", HOST, node.port)
        for replica, master in zip(replicas, itertools.cycle(masters), strict=False):
            self._wait(functools.partial(replica.knows, master), f"{replica} to meet {master}")
            with replica.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", master.node_id)
        self.wait_until_ready()
        return self

    def shards(self) -> list[ClusterShard]:
        """The masters with their replicas and slot ranges, as the running nodes see them now.

        Right after a failover or a slot move, gossip takes a moment to reach every node:
        this waits (up to 5 s) until the running nodes agree. Should they still disagree,
        each slot goes to the master that claims it with the highest config epoch, as Redis
        itself decides, with the replicas of the view that made that claim.

        Raises:
            RedisServerError: No node is running.
        """
        deadline = time.monotonic() + _SETTLE_S
        views = self._views()
        while _disagree(views) and time.monotonic() < deadline:
            time.sleep(0.05)
            views = self._views()
        if not views:
            msg = "no node of the cluster is running"
            raise RedisServerError(msg)
        by_id = {node.node_id: node for node in self.nodes}
        shards = [
            ClusterShard(
                master=by_id[owner],
                replicas=tuple(by_id[replica] for replica in replicas),
                slots=slots,
            )
            for owner, (slots, replicas) in newest_layout(views).items()
        ]
        return sorted(shards, key=lambda shard: shard.slots)

    def _views(self) -> list[list[KnownNode]]:
        views = []
        for node in self.nodes:
            if node.running:
                with contextlib.suppress(RedisError):  # killed since
                    views.append(node.view())
        return views

    @staticmethod
    def slot_for_key(key: str | bytes) -> int:
        """The hash slot of ``key`` (CLUSTER KEYSLOT, computed locally)."""
        return key_slot(key.encode() if isinstance(key, str) else key)

    def node_for_key(self, key: str | bytes) -> ClusterNode:
        """The master that serves ``key``'s slot now.

        Raises:
            LookupError: No master serves the slot.
        """
        slot = self.slot_for_key(key)
        for shard in self.shards():
            if shard.serves(slot):
                return shard.master
        msg = f"no master serves slot {slot}"
        raise LookupError(msg)

    def restart(self, node: ClusterNode, *, empty: bool = False, wait: bool = True) -> None:
        """Stop ``node`` if it runs and start it again with its ``nodes.conf``.

        It rejoins as the master (or replica) of the slots it had. Without ``persistent`` it
        comes back empty anyway; with it, ``empty=True`` drops its data too: a shard
        restarted empty, its slots still assigned to it.

        Args:
            node: One of :attr:`nodes`.
            empty: Delete its data files (all but ``nodes.conf``) before starting.
            wait: Wait until the whole cluster is ok again (at least 2 s: a restarted
                master holds back that long before it serves).
        """
        node.stop()
        if empty:
            node.wipe(keep=[NODES_FILE])
        node.start()
        if wait:
            self.wait_until_ready()

    def flushall(self) -> None:
        """FLUSHALL on every master."""
        for shard in self.shards():
            with shard.master.client() as client:
                client.flushall()

    def move_slot(self, slot: int, to: ClusterNode) -> None:
        """Move ``slot`` and its keys to the master ``to`` (as ``redis-cli --cluster reshard``).

        Clients that still route the slot to its old master get ``MOVED``.

        Raises:
            ValueError: ``to`` is not a master, or no master serves ``slot``.
        """
        shards = self.shards()
        source = next((shard.master for shard in shards if shard.serves(slot)), None)
        if source is None or to not in {shard.master for shard in shards}:
            msg = f"cannot move slot {slot} from {source} to {to}: both must be masters"
            raise ValueError(msg)
        if source is to:
            return
        with to.client() as target, source.client(decode_responses=False) as origin:
            target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
            origin.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", to.node_id)
            while keys := origin.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                origin.execute_command("MIGRATE", HOST, to.port, "", 0, 5000, "KEYS", *keys)
        # The new owner first, then the old one, then the rest: no node ever points back.
        for master in [to, source, *(s.master for s in shards if s.master not in (to, source))]:
            with master.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", to.node_id)
        self.wait_until_ready()

    def states(self) -> dict[ClusterNode, str]:
        """``cluster_state`` (``ok`` or ``fail``) as each running node reports it now."""
        return {n: n.cluster_info().get("cluster_state", "") for n in self.nodes if n.running}

    def _problems(self) -> Iterator[str]:
        if stopped := [node for node in self.nodes if not node.running]:
            yield f"not running: {stopped}"
            return
        facts: set[frozenset[tuple[object, ...]]] = set()
        for node in self.nodes:
            view, info = node.view(), node.cluster_info()
            if info.get("cluster_state") != "ok" or info.get("cluster_slots_ok") != str(SLOTS):
                yield f"{node}: {info}"
            is_master = any(k.port == node.port and k.is_master for k in view)
            if not is_master and (link := node.master_link()) != "up":
                yield f"{node}: master link {link}"
            seen = {known.port: known for known in view}
            for other in self.nodes:
                known = seen.get(other.port)
                if known is None or known.flags & BAD_FLAGS or known.migrating:
                    yield f"{node} sees {other} as {known}"
            facts.add(frozenset(known.fact for known in view))
        if len(facts) != 1:
            yield f"the nodes disagree: {facts}"


def _disagree(views: list[list[KnownNode]]) -> bool:
    return len({frozenset(known.fact for known in view) for view in views}) > 1
