"""A local replicated Kafka cluster: three (or ``nodes``) KRaft nodes on loopback, each a
``LocalBroker`` (broker and controller in one JVM) from the same jars, one data directory each,
a static controller quorum of all of them, Kafka's own topics replicated to three.

What the fault tests need from it: each node killed (SIGKILL), hung (SIGSTOP/SIGCONT), stopped
and started again by id, and the leader and in-sync replicas of any partition.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from uplink.broker.local import (
    KAFKA_VERSION,
    BrokerSettings,
    ConsoleFilter,
    LocalBroker,
    new_cluster_id,
)
from uplink.cache import default_cache_dir
from uplink.exceptions import BrokerError
from uplink.resources import BlockingResource

log = logging.getLogger(__name__)

# How soon a dead or hung node is noticed. Kafka's defaults (a broker fenced 9 s after its last
# heartbeat, a controller re-elected 2 s after its last fetch), stated here so that the fault
# tests' timings and docs/cluster.md's figures name what they depend on.
FAILURE_DETECTION: tuple[tuple[str, str], ...] = (
    ("broker.session.timeout.ms", "9000"),
    ("broker.heartbeat.interval.ms", "2000"),
    ("controller.quorum.fetch.timeout.ms", "2000"),
    # A follower that stops fetching leaves the ISR after this long, unless it is fenced first.
    ("replica.lag.time.max.ms", "30000"),
    # Topics uplink did not create (none should exist) get two copies acknowledged too.
    ("min.insync.replicas", "2"),
)


@dataclass(frozen=True)
class ClusterSettings:
    """``nodes`` nodes; node n's broker listens on ``port + 2(n-1)`` and its controller on the
    port after (``ports`` gives each node's pair instead: the tests take free ports)."""

    nodes: int = 3
    port: int = 9092
    ports: tuple[tuple[int, int], ...] | None = None
    data_dir: Path = Path("var/kafka")
    cache_dir: Path = field(default_factory=default_cache_dir)
    kafka_version: str = KAFKA_VERSION
    heap: str = "512m"  # three JVMs on one machine
    ready_timeout: float = 180.0  # three JVMs starting at once on two cores

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise BrokerError(f"a cluster needs at least one node, not {self.nodes}")
        if self.ports is not None and len(self.ports) != self.nodes:
            raise BrokerError(f"{len(self.ports)} port pairs for {self.nodes} nodes")

    def node_ports(self, node_id: int) -> tuple[int, int]:
        if self.ports is not None:
            return self.ports[node_id - 1]
        broker = self.port + 2 * (node_id - 1)
        return broker, broker + 1

    def node(self, node_id: int, cluster_id: str) -> BrokerSettings:
        port, controller = self.node_ports(node_id)
        voters = ",".join(
            f"{n}@127.0.0.1:{self.node_ports(n)[1]}" for n in range(1, self.nodes + 1)
        )
        return BrokerSettings(
            port=port,
            controller_port=controller,
            data_dir=self.data_dir / f"node-{node_id}",
            cache_dir=self.cache_dir,
            kafka_version=self.kafka_version,
            heap=self.heap,
            ready_timeout=self.ready_timeout,
            node_id=node_id,
            voters=voters,
            cluster_id=cluster_id,
            replication=min(self.nodes, 3),
            overrides=FAILURE_DETECTION,
        )


def existing_cluster_id(data_dir: Path) -> str | None:
    """The id the nodes under ``data_dir`` were formatted with, if any was: a node formatted
    anew beside them must join the same cluster."""
    for meta in sorted(data_dir.glob("node-*/logs/meta.properties")):
        for line in meta.read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() == "cluster.id" and value.strip():
                return value.strip()
    return None


class LocalCluster(BlockingResource):
    """The nodes, started together (each waits for a quorum of the others) and stopped together.

    Each node's output goes to ``log_dir/node-<n>.log`` when given; ``log_sink`` and
    ``console`` are as ``LocalBroker``'s (the console lines are prefixed ``kafka-<n>: ``).
    """

    def __init__(
        self,
        settings: ClusterSettings,
        log_sink: IO[str] | None = None,
        *,
        log_dir: Path | None = None,
        console_levels: frozenset[str] | None = None,
    ) -> None:
        self.settings = settings
        cluster_id = existing_cluster_id(settings.data_dir) or new_cluster_id()
        self.cluster_id = cluster_id
        self._nodes: dict[int, LocalBroker] = {}
        for node_id in range(1, settings.nodes + 1):
            console = (
                ConsoleFilter(console_levels, prefix=f"kafka-{node_id}: ")
                if console_levels is not None
                else None
            )
            self._nodes[node_id] = LocalBroker(
                settings.node(node_id, cluster_id),
                log_sink,
                log_file=log_dir / f"node-{node_id}.log" if log_dir is not None else None,
                console=console,
            )

    @property
    def node_ids(self) -> list[int]:
        return list(self._nodes)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.bootstrap_servers for node in self._nodes.values())

    def node(self, node_id: int) -> LocalBroker:
        try:
            return self._nodes[node_id]
        except KeyError:
            raise BrokerError(f"no node {node_id} (nodes {self.node_ids})") from None

    # --- the whole cluster -------------------------------------------------------------------

    def start(self) -> None:
        """Start every node at once (none serves before a quorum of controllers answers) and
        return once all serve; if one fails, every node is killed and its error raised."""
        self.start_nodes(self.node_ids)

    def start_nodes(self, node_ids: Sequence[int]) -> None:
        """Start these nodes (stopped or killed ones) together; return once all serve."""
        failures: dict[int, BaseException] = {}

        def start(node_id: int) -> None:
            try:
                self._nodes[node_id].start()
            except BaseException as exc:
                failures[node_id] = exc

        threads = [
            threading.Thread(target=start, args=(n,), name=f"kafka-{n}-start") for n in node_ids
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            self.kill_all()
            node_id, error = sorted(failures.items())[0]
            raise BrokerError(f"node {node_id} of the cluster: {error}") from error
        log.info("Kafka cluster serving on %s", self.bootstrap_servers)

    def stop(self, timeout: float = 60.0) -> None:
        """Controlled shutdown of every node at once (SIGTERM; SIGKILL after ``timeout``):
        one after the other, the last ones would wait for a controller quorum already gone."""
        for node in self._nodes.values():
            node.terminate()
        deadline = time.monotonic() + timeout  # one for all: they shut down side by side
        for node in self._nodes.values():
            node.stop(max(deadline - time.monotonic(), 0.1))

    def kill_all(self) -> None:
        for node in self._nodes.values():
            node.kill()

    @property
    def running(self) -> bool:
        """Whether any node is running (a paused one too)."""
        return any(node.running for node in self._nodes.values())

    # --- one node ----------------------------------------------------------------------------

    def kill(self, node_id: int) -> None:
        """SIGKILL: a crashed machine."""
        self.node(node_id).kill()

    def pause(self, node_id: int) -> None:
        """SIGSTOP: a hung machine whose connections stay open."""
        self.node(node_id).pause()

    def resume(self, node_id: int) -> None:
        self.node(node_id).resume()

    def stop_node(self, node_id: int, timeout: float = 60.0) -> None:
        """Controlled shutdown of one node (its leaderships move first), as for an upgrade."""
        self.node(node_id).stop(timeout)

    def restart(self, node_id: int) -> None:
        """Start a stopped or killed node again on its data; returns once it serves."""
        self.start_nodes([node_id])


@dataclass(frozen=True)
class PartitionState:
    partition: int
    leader: int  # -1: none
    replicas: tuple[int, ...]
    isr: tuple[int, ...]


async def describe(
    bootstrap_servers: str, topics: Sequence[str], timeout: float = 5.0
) -> Mapping[str, list[PartitionState]]:
    """Each topic's partitions as the cluster's metadata has them now: leader and ISR.

    ``timeout`` bounds each request: a hung node may be the one asked (the caller polls)."""
    options: dict[str, Any] = {"request_timeout_ms": int(timeout * 1000)}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **options)
    try:
        async with asyncio.timeout(timeout * 3):
            await admin.start()
            described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    states: dict[str, list[PartitionState]] = {}
    for topic in described:
        states[topic["topic"]] = sorted(
            (
                PartitionState(p["partition"], p["leader"], tuple(p["replicas"]), tuple(p["isr"]))
                for p in topic["partitions"]
            ),
            key=lambda state: state.partition,
        )
    return states


async def leaders(bootstrap_servers: str, topic: str) -> dict[int, int]:
    """Partition → the node leading it (-1: none)."""
    states = await describe(bootstrap_servers, [topic])
    return {state.partition: state.leader for state in states.get(topic, [])}


async def fully_replicated(
    bootstrap_servers: str, topics: Sequence[str], replicas: int = 3
) -> bool:
    """Whether every partition of ``topics`` has a leader and all ``replicas`` in sync.

    A topic the node asked does not know yet, or knows without its partitions (a topic just
    created, whose metadata has not reached every node), is not."""
    try:
        states = await describe(bootstrap_servers, topics)
    except (KafkaError, TimeoutError):
        return False
    return all(
        bool(states.get(topic))
        and all(state.leader >= 0 and len(state.isr) >= replicas for state in states[topic])
        for topic in topics
    )


__all__ = [
    "FAILURE_DETECTION",
    "ClusterSettings",
    "LocalCluster",
    "PartitionState",
    "describe",
    "fully_replicated",
    "leaders",
]
