"""``ClusterNode``: one redis-server of a ``RedisClusterServer``, and what it reports.

CLUSTER NODES is parsed here: each node's view of the others (``KnownNode``), from which
the cluster decides whether its nodes agree and which master serves which slots.
"""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from codex_bot.testing.process import HOST, ServerProcess

NODES_FILE = "nodes.conf"
_BUS_OFFSET = 10_000
"""Redis 6.2 puts a node's cluster bus on its port + 10000; both must be free."""
BAD_FLAGS = frozenset({"fail", "fail?", "handshake", "noaddr"})
"""Flags of a node that is down, suspected down, or not yet (or no longer) reachable."""

SLOTS = 16384
Slots = tuple[tuple[int, int], ...]
"""Inclusive ``(first, last)`` slot ranges."""


@dataclass(frozen=True, slots=True)
class KnownNode:
    """One line of CLUSTER NODES: how one node sees another."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str
    epoch: int
    """Its config epoch: where two views disagree on a slot, the higher epoch is newer."""
    slots: Slots
    migrating: bool

    @property
    def is_master(self) -> bool:
        """Whether it is a master (with or without slots)."""
        return "master" in self.flags

    @property
    def fact(self) -> tuple[str, int, bool, str, Slots]:
        """What every node must agree on; failure flags are each node's own opinion."""
        return self.node_id, self.port, self.is_master, self.master_id, self.slots


class ClusterNode(ServerProcess):
    """One node of a ``RedisClusterServer``: a ``ServerProcess`` with a cluster node id.

    ``stop()`` and ``kill()`` take it down; ``RedisClusterServer.restart`` brings it back
    with its ``nodes.conf``, so it rejoins with the slots it had.
    """

    node_id: str = ""
    """The cluster's name for the node (CLUSTER MYID), kept across restarts."""

    def view(self) -> list[KnownNode]:
        """Every node as this one sees it (CLUSTER NODES), itself included."""
        with self.client() as client:
            return parse_nodes(str(client.execute_command("CLUSTER", "NODES")))

    def cluster_info(self) -> dict[str, str]:
        """CLUSTER INFO as a dict: ``cluster_state``, ``cluster_slots_ok``, ..."""
        with self.client() as client:
            text = str(client.execute_command("CLUSTER", "INFO"))
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    def master_link(self) -> str:
        """``master_link_status`` of a replica (``up``/``down``), ``none`` on a master."""
        with self.client() as client:
            return str(client.info("replication").get("master_link_status", "none"))

    def knows(self, other: ClusterNode) -> bool:
        """Whether this node has met ``other`` and sees it as reachable."""
        return any(k.node_id == other.node_id and not k.flags & BAD_FLAGS for k in self.view())

    def add_slots(self, first: int, last: int) -> None:
        """Assign slots ``first``..``last`` to this node (ADDSLOTSRANGE on Redis 7+)."""
        with self.client() as client:
            version = client.info("server")["redis_version"]
            if int(version.split(".")[0]) >= 7:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            else:
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))


def cluster_ports(count: int) -> list[int]:
    """Free ports below the ephemeral range whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(10_000, 22_000)
        if port not in ports and _free(port) and _free(port + _BUS_OFFSET):
            ports.append(port)
    return ports


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _parse_nodes(text: str) -> Iterator[KnownNode]:
    for line in text.splitlines():
        node_id, address, flags, master_id, *fields = line.split()
        slots = fields[4:]  # after ping-sent, pong-recv, config-epoch and link-state
        yield KnownNode(
            node_id=node_id,
            port=int(address.split("@")[0].rsplit(":", 1)[1] or 0),
            flags=frozenset(flags.split(",")) - {"myself"},
            master_id=master_id,
            epoch=int(fields[2]),
            slots=tuple(_slot_range(s) for s in slots if not s.startswith("[")),
            migrating=any(s.startswith("[") for s in slots),
        )


def newest_layout(views: list[list[KnownNode]]) -> dict[str, tuple[Slots, tuple[str, ...]]]:
    """Each master's node id with its slot ranges and its replicas' ids.

    Where the views disagree (gossip has not yet spread a failover or a slot move), a slot
    goes to the master that claims it with the highest config epoch, as Redis decides, and
    a master's replicas are those of the view that made its newest claim.
    """
    claims = sorted(
        ((known, view) for view in views for known in view if known.is_master),
        key=lambda claim: claim[0].epoch,
    )
    owners: list[str | None] = [None] * SLOTS
    newest: dict[str, list[KnownNode]] = {}
    for known, view in claims:  # oldest first: a newer claim paints over an older one
        for first, last in known.slots:
            owners[first : last + 1] = [known.node_id] * (last - first + 1)
        newest[known.node_id] = view
    ranges: dict[str, list[tuple[int, int]]] = {}
    slot = 0
    for owner, run in itertools.groupby(owners):
        size = len(list(run))
        if owner is not None:
            ranges.setdefault(owner, []).append((slot, slot + size - 1))
        slot += size
    return {
        owner: (tuple(slots), tuple(k.node_id for k in newest[owner] if k.master_id == owner))
        for owner, slots in ranges.items()
    }


def parse_nodes(text: str) -> list[KnownNode]:
    """The lines of a CLUSTER NODES reply."""
    return list(_parse_nodes(text))


def _slot_range(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    return int(first), int(last or first)
