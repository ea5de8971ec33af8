"""The cluster tests' fixtures: one local three-node cluster for the session, healed after each
test (paused nodes resumed, dead ones started again, every replica back in sync), an ingress
process on it, and the reliability figures each test records."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.cluster.load import Figures, Ingress, until
from uplink.broker import free_port
from uplink.broker.cluster import ClusterSettings, LocalCluster, fully_replicated
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

# Kafka's own topics: their coordinators (groups, transactions) move with their leaders.
INTERNAL = ["__consumer_offsets", "__transaction_state"]
_FIGURES: list[Figures] = []


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("cluster")
    settings = ClusterSettings(
        ports=tuple((free_port(), free_port()) for _ in range(3)), data_dir=root / "kafka"
    )
    # Their logs in files; on the console only what comes before a first record (the JVM's own).
    cluster = LocalCluster(settings, log_dir=root / "logs", console_levels=frozenset())
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(cluster: LocalCluster) -> str:
    """The cluster, for the shared fixtures (``read_records``) too."""
    return cluster.bootstrap_servers


@pytest.fixture(autouse=True)
async def healed(cluster: LocalCluster) -> AsyncIterator[None]:
    """Each test starts on a whole cluster and leaves one behind, whatever it did to it."""
    await _heal(cluster)
    yield
    await _heal(cluster)


async def _heal(cluster: LocalCluster) -> None:
    import asyncio

    for node_id in cluster.node_ids:
        if cluster.node(node_id).running:
            cluster.resume(node_id)  # harmless unless paused
    down = [n for n in cluster.node_ids if not cluster.node(n).running]
    if down:
        await asyncio.to_thread(cluster.start_nodes, down)
    topics = INTERNAL if await _exists(cluster, INTERNAL) else []
    if topics:
        await until(
            lambda: fully_replicated(cluster.bootstrap_servers, topics),
            "Kafka's own topics fully replicated",
            timeout=120,
        )


async def _exists(cluster: LocalCluster, names: list[str]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap_servers)
    await admin.start()
    try:
        return set(names) <= set(await admin.list_topics())
    finally:
        await admin.close()


@pytest.fixture
def cluster_topics(topics: Topics) -> Topics:
    """The test's topics as production has them: 6 partitions, replication factor 3
    (min.insync.replicas=2)."""
    from dataclasses import replace

    return replace(topics, messages_partitions=6, replication_factor=3)


@pytest.fixture
async def replicated(cluster: LocalCluster, cluster_topics: Topics) -> Topics:
    """The test's topics created on the cluster, every replica in sync."""
    kafka = KafkaSettings(bootstrap_servers=cluster.bootstrap_servers)
    await ensure_topics(kafka, cluster_topics)
    await until(
        lambda: fully_replicated(cluster.bootstrap_servers, [cluster_topics.messages]),
        "the test's topics fully replicated",
        timeout=60,
    )
    return cluster_topics


@pytest.fixture
async def ingress(
    tmp_path: Path, cluster: LocalCluster, replicated: Topics
) -> AsyncIterator[Ingress]:
    """`uplink ingress` on loopback against the cluster, ready; stopped (SIGTERM) afterwards."""
    process = Ingress(cluster.bootstrap_servers, replicated, free_port(), tmp_path / "ingress.log")
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


@pytest.fixture
def figures() -> Iterator[list[Figures]]:
    """Rows of the reliability table (bench/RESULTS.md): a test appends its own."""
    rows: list[Figures] = []
    yield rows
    _FIGURES.extend(rows)


def pytest_sessionfinish(session: pytest.Session) -> None:
    # bench/reliability.py runs the cluster tests with this set and writes the table.
    out = os.environ.get("UPLINK_RELIABILITY_OUT")
    if out and _FIGURES:
        Path(out).write_text(json.dumps([row.as_dict() for row in _FIGURES], indent=2))
