"""The testcontainers Kafka: configured as the official image is, serving on a published port,
removed afterwards (also when the block fails), and never what `uplink dev` gets.

The tests marked ``container`` need an engine; scripts/test runs them where one answers, with
UPLINK_TEST_KAFKA=container (an engine missing then is a failure, not a skip).
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.servers.kafka import (
    DEFAULT_IMAGE,
    LABEL,
    ContainerBroker,
    ContainerSettings,
    docker_engine_answers,
    kafka_choice,
    session_broker,
)
from uplink.broker import free_port, kafka_broker
from uplink.exceptions import BrokerError, ConfigError

pytestmark = pytest.mark.anyio


@pytest.fixture
def engine() -> Mapping[str, str]:
    """This run's environment, with an engine that answers."""
    if not docker_engine_answers(os.environ):
        if kafka_choice(os.environ) == "container":
            pytest.fail("UPLINK_TEST_KAFKA=container, but no container engine answers")
        pytest.skip("no container engine answers (DOCKER_HOST)")
    return os.environ


def container_state(environ: Mapping[str, str], name: str) -> dict[str, str] | None:
    """The labels of the container ``name``, or None when there is none."""
    import docker
    from docker.errors import NotFound

    client = docker.from_env(environment=dict(environ))
    try:
        labels: dict[str, str] = client.containers.get(name).labels
        return labels
    except NotFound:
        return None
    finally:
        client.close()


async def round_trip(bootstrap: str) -> tuple[int, str]:
    """A record produced and read back, and the broker's auto.create.topics.enable."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("round.trip", 3, 1)])
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")])
    finally:
        await admin.close()
    auto_create = next(
        value
        for _, _, _, _, entries in response.resources
        for key, value, *_ in entries
        if key == "auto.create.topics.enable"
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait("round.trip", b"kept", partition=1)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition("round.trip", 1)])
        await consumer.seek_to_beginning()
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert record.value == b"kept"
    return sent.offset, auto_create


@pytest.mark.container
async def test_container_broker_serves_as_configured_and_is_removed_when_the_block_fails(
    engine: Mapping[str, str],
) -> None:
    settings = ContainerSettings.from_env(engine)
    log = io.StringIO()
    broker = ContainerBroker(settings, engine, log_sink=log)
    with pytest.raises(RuntimeError, match="the test body failed"):
        with broker:
            labels = container_state(engine, broker.name)
            assert labels is not None and labels[LABEL] == settings.run
            host, _ = broker.bootstrap_servers.rsplit(":", 1)
            assert host == "127.0.0.1"
            # KAFKA_AUTO_CREATE_TOPICS_ENABLE reached the broker: the variables are read as
            # the official image reads them.
            assert await round_trip(broker.bootstrap_servers) == (0, "false")
            raise RuntimeError("the test body failed")
    assert container_state(engine, broker.name) is None
    assert "Kafka Server started" in log.getvalue()
    broker.stop()  # a second stop is harmless
    with pytest.raises(BrokerError, match="not started"):
        _ = broker.bootstrap_servers


@pytest.mark.container
async def test_a_broker_that_is_not_disposable_stays_local_where_an_engine_answers(
    engine: Mapping[str, str], tmp_path: Path
) -> None:
    """`uplink dev`'s broker: its data in the directory it names, on the port it names, even
    with UPLINK_TEST_KAFKA=container (a test setting, not dev's)."""
    port = free_port()
    environ = {**engine, "UPLINK_TEST_KAFKA": "container"}
    with kafka_broker(environ, data_dir=tmp_path / "kafka", port=port) as bootstrap:
        assert bootstrap == f"127.0.0.1:{port}"
        assert await round_trip(bootstrap) == (0, "false")
    assert (tmp_path / "kafka" / "logs" / "meta.properties").is_file()
    assert (tmp_path / "kafka" / "logs" / "round.trip-1").is_dir()


def test_insisting_on_a_container_without_an_engine_fails(tmp_path: Path) -> None:
    environ = {
        "UPLINK_TEST_KAFKA": "container",
        "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}",
    }
    with pytest.raises(BrokerError, match="no container engine answers"):
        with session_broker(environ, data_dir=tmp_path / "kafka"):
            pass
    assert not (tmp_path / "kafka").exists()  # nor did it fall back to the local broker


def test_a_socket_file_nothing_listens_on_is_no_engine(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(str(path))  # the file stays when its server is gone
    assert path.is_socket()
    assert not docker_engine_answers({"DOCKER_HOST": f"unix://{path}"})


def test_the_configured_broker_wins_over_both() -> None:
    environ = {"KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092", "UPLINK_TEST_KAFKA": "container"}
    with session_broker(environ, data_dir=Path("unused")) as bootstrap:
        assert bootstrap == "kafka.example:9092"


def test_test_kafka_settings_from_the_environment() -> None:
    assert ContainerSettings.from_env({}) == ContainerSettings(image=DEFAULT_IMAGE)
    local = ContainerSettings.from_env(
        {"UPLINK_TEST_KAFKA_IMAGE": " localhost/uplink-test-kafka:x ", "UPLINK_TEST_RUN": "r1"}
    )
    assert (local.image, local.run) == ("localhost/uplink-test-kafka:x", "r1")
    with pytest.raises(ConfigError, match="UPLINK_TEST_KAFKA_IMAGE"):
        ContainerSettings.from_env({"UPLINK_TEST_KAFKA_IMAGE": "two words"})
    assert kafka_choice({}) == "auto"
    assert kafka_choice({"UPLINK_TEST_KAFKA": "Local"}) == "local"
    with pytest.raises(ConfigError, match="UPLINK_TEST_KAFKA"):
        kafka_choice({"UPLINK_TEST_KAFKA": "docker"})
