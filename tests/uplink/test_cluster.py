"""The local cluster's layout, without starting it: each node's ports, data directory and
configuration, the static quorum they share, and one cluster id across restarts. And the
replication check the cluster tests wait on, against the session's broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.load import until
from uplink.broker.cluster import (
    ClusterSettings,
    LocalCluster,
    existing_cluster_id,
    fully_replicated,
)
from uplink.broker.local import LocalBroker
from uplink.exceptions import BrokerError
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics


def test_nodes_take_consecutive_ports_and_share_one_quorum(tmp_path: Path) -> None:
    settings = ClusterSettings(port=19092, data_dir=tmp_path)
    nodes = [settings.node(n, "cluster-id") for n in (1, 2, 3)]
    assert [(node.port, node.controller_port) for node in nodes] == [
        (19092, 19093),
        (19094, 19095),
        (19096, 19097),
    ]
    assert {node.voters for node in nodes} == {
        "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    }
    assert [node.data_dir for node in nodes] == [tmp_path / f"node-{n}" for n in (1, 2, 3)]
    assert {node.replication for node in nodes} == {3}


def test_a_node_is_configured_as_one_voter_of_three_replicating_kafkas_topics(
    tmp_path: Path,
) -> None:
    node = ClusterSettings(port=19092, data_dir=tmp_path).node(2, "cluster-id")
    data = tmp_path / "node-2"
    data.mkdir()
    config = dict(
        line.split("=", 1)
        for line in LocalBroker(node)._write_config(data).read_text().splitlines()
        if line
    )
    assert config["node.id"] == "2"
    assert config["controller.quorum.voters"] == node.voters
    assert "controller.quorum.bootstrap.servers" not in config
    assert config["offsets.topic.replication.factor"] == "3"
    assert config["transaction.state.log.replication.factor"] == "3"
    assert config["transaction.state.log.min.isr"] == "2"
    assert config["min.insync.replicas"] == "2"
    assert config["listeners"] == "PLAINTEXT://127.0.0.1:19094,CONTROLLER://127.0.0.1:19095"


def test_a_single_broker_keeps_its_standalone_quorum(tmp_path: Path) -> None:
    config = LocalBroker(ClusterSettings(port=19092, nodes=1).node(1, "x"))._write_config(tmp_path)
    assert "offsets.topic.replication.factor=1" in config.read_text()


def test_the_cluster_id_of_formatted_nodes_is_kept(tmp_path: Path) -> None:
    assert existing_cluster_id(tmp_path) is None
    logs = tmp_path / "node-2" / "logs"
    logs.mkdir(parents=True)
    (logs / "meta.properties").write_text("version=1\ncluster.id=AbCdEf\nnode.id=2\n")
    assert existing_cluster_id(tmp_path) == "AbCdEf"
    cluster = LocalCluster(ClusterSettings(port=19092, data_dir=tmp_path))
    assert cluster.cluster_id == "AbCdEf"
    assert cluster.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    with pytest.raises(BrokerError, match="no node 4"):
        cluster.node(4)


def test_settings_refuse_what_cannot_be_a_cluster() -> None:
    with pytest.raises(BrokerError):
        ClusterSettings(nodes=0)
    with pytest.raises(BrokerError):
        ClusterSettings(nodes=3, ports=((1, 2),))


@pytest.mark.anyio
async def test_a_topic_is_fully_replicated_only_once_known_with_every_replica_in_sync(
    kafka_bootstrap: str, topics: Topics
) -> None:
    name = topics.messages
    # Unknown: the node answers the topic with no partitions, which is not "all in sync".
    assert not await fully_replicated(kafka_bootstrap, [name], replicas=1)
    await ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), topics)
    await until(lambda: fully_replicated(kafka_bootstrap, [name], replicas=1), name, 30)
    # One broker can never have two replicas in sync.
    assert not await fully_replicated(kafka_bootstrap, [name], replicas=2)
