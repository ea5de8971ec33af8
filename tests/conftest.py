"""Fixtures: a real Kafka broker per session, random topic names per test, loopback servers."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.servers.kafka import session_broker
from tests.servers.registry import LocalRegistry, RegistryServerSettings
from tests.servers.s3 import LocalS3, S3ServerSettings
from uplink.broker import BrokerSettings, LocalBroker, free_port
from uplink.s3.settings import S3Location, S3Settings
from uplink.settings import IngressSettings, KafkaSettings, Secret, Topics

EXAMPLES = Path(__file__).parent / "examples"

Reader = Callable[..., Awaitable[list[ConsumerRecord[bytes, bytes]]]]
Server = Callable[[Any], Awaitable[str]]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``kafka`` every test on the session's broker: scripts/test runs those a second time
    through a container broker (``-m "kafka or container"``); ``s3`` every test on the session's
    S3 server; ``registry`` every test on a schema registry; and ``own_broker`` every test on a
    broker of its own."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in fixtures:
            item.add_marker(pytest.mark.kafka)
        if "s3_server" in fixtures:
            item.add_marker(pytest.mark.s3)
        if "schema_registry" in fixtures or "own_registry" in fixtures:
            item.add_marker(pytest.mark.registry)
        if "own_broker" in fixtures:
            item.add_marker(pytest.mark.own_broker)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set → testcontainers when an engine answers (UPLINK_TEST_KAFKA)
    → local broker from jars."""
    with session_broker(os.environ, data_dir=tmp_path_factory.mktemp("kafka")) as bootstrap:
        yield bootstrap


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[LocalBroker]:
    """A local broker of the test's own, whichever the session's is: to kill, hang and start
    again on the same data. Its output goes to ``tmp_path / "broker.log"`` only."""
    settings = BrokerSettings(
        port=free_port(), controller_port=free_port(), data_dir=tmp_path / "kafka"
    )
    broker = LocalBroker(settings, log_file=tmp_path / "broker.log", console=lambda line: None)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    """A real S3 server (versitygw, built once into ~/.cache/uplink) for the session."""
    with LocalS3(S3ServerSettings(data_dir=tmp_path_factory.mktemp("s3") / "data")) as server:
        yield server


def s3_location(server: LocalS3, prefix: str = "archive") -> S3Location:
    """A new bucket on ``server``, and how to reach it."""
    bucket = server.bucket(f"test-{uuid.uuid4().hex[:12]}")
    settings = server.settings
    return S3Location(
        bucket,
        prefix,
        S3Settings(
            endpoint=settings.endpoint,
            access_key_id=settings.access_key,
            secret_access_key=Secret(settings.secret_key.reveal()),
        ),
    )


@pytest.fixture
def s3(s3_server: LocalS3) -> S3Location:
    """A fresh bucket per test on the session's S3 server."""
    return s3_location(s3_server)


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Apicurio Registry for the session (from Maven Central, cached in ~/.cache/uplink,
    in-memory storage): the URL of its Confluent-compatible API. Tests use their own subjects
    (their topics are random)."""
    log = tmp_path_factory.mktemp("registry") / "registry.log"
    with LocalRegistry(RegistryServerSettings(port=free_port()), log_file=log) as registry:
        yield registry.url


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[Callable[[int], LocalRegistry]]:
    """Registries of the test's own (to stop, or to start late): ``own_registry(port)`` starts
    one on that port; each is stopped at the end."""
    started: list[LocalRegistry] = []

    def start(port: int) -> LocalRegistry:
        registry = LocalRegistry(
            RegistryServerSettings(port=port), log_file=tmp_path / f"registry-{port}.log"
        )
        started.append(registry)
        registry.start()
        return registry

    yield start
    for registry in started:
        registry.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def topics() -> Topics:
    """Fresh topic names for each test, so tests never see each other's records."""
    suffix = uuid.uuid4().hex[:10]
    return Topics(
        messages=f"test.messages.{suffix}",
        quarantine=f"test.quarantine.{suffix}",
        media=f"test.media.{suffix}",
        statuses=f"test.statuses.{suffix}",
        meta_events=f"test.meta-events.{suffix}",
        messages_partitions=3,
        partitions=1,
    )


@pytest.fixture
def ingress_settings(kafka_bootstrap: str, topics: Topics) -> IngressSettings:
    return IngressSettings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap), topics=topics)


# The servers the ingress runs on (`uplink ingress --server`); a test runs on both with
# @pytest.mark.parametrize("server", SERVERS, indirect=True), else on uvicorn.
SERVERS = ["uvicorn", "granian"]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "uvicorn"))


@pytest.fixture
async def serve(server: str) -> AsyncIterator[Server]:
    """Serve ASGI apps on loopback in this event loop; returns their base URL. With the
    ``server`` granian, the ingress (an ``IngressApp``) is served by granian, embedded, on its
    RSGI interface, as ``uplink ingress --server granian`` serves it."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    embedded: list[tuple[Any, Any, asyncio.Task[None]]] = []

    async def start(app: Any) -> str:
        port = free_port()
        if server == "granian":
            return await start_granian(app, port)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_level="warning"
        )
        running = uvicorn.Server(config)
        task = asyncio.create_task(running.serve())
        servers.append((running, task))
        async with asyncio.timeout(30):
            while not running.started:
                if task.done():
                    task.result()  # startup failed: raise why
                await asyncio.sleep(0.01)
        return f"http://127.0.0.1:{port}"

    async def start_granian(app: Any, port: int) -> str:
        from granian.constants import HTTPModes, Interfaces
        from granian.server.embed import Server as Embedded

        from ingress.rsgi import RsgiIngress

        rsgi = RsgiIngress(app)
        await rsgi.startup()
        embedded_server = Embedded(
            rsgi,
            address="127.0.0.1",
            port=port,
            interface=Interfaces.RSGI,
            http=HTTPModes.http1,
            websockets=False,
            log_enabled=False,
        )
        task = asyncio.create_task(embedded_server.serve())
        embedded.append((embedded_server, rsgi, task))
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client, asyncio.timeout(30):
            while True:  # bound at once, served once the worker runs: until then, refused
                if task.done():
                    task.result()  # startup failed: raise why
                try:
                    if (await client.get(f"{url}/healthz")).status_code == 200:
                        return url
                except httpx.TransportError:
                    await asyncio.sleep(0.01)

    yield start
    for uvicorn_server, _ in servers:
        uvicorn_server.should_exit = True
    for _, task in servers:
        await task
    for embedded_server, _, _ in embedded:
        embedded_server.stop()
    for _, rsgi, task in embedded:
        await task
        await rsgi.shutdown()


async def wait_ready(client: httpx.AsyncClient, base_url: str, timeout: float = 60) -> None:
    """Until /readyz says 200: the producer is connected and the topics exist."""
    async with asyncio.timeout(timeout):
        while (await client.get(f"{base_url}/readyz")).status_code != 200:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@pytest.fixture
def read_records(kafka_bootstrap: str) -> Reader:
    async def read(
        topic: str, count: int | None = None, timeout: float = 30.0, bootstrap: str | None = None
    ) -> list[ConsumerRecord[bytes, bytes]]:
        """Records of ``topic`` from the beginning: ``count`` of them, or all up to the end."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap or kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            async with asyncio.timeout(timeout):
                tps = await _partitions(bootstrap or kafka_bootstrap, topic)
                consumer.assign(tps)
                await consumer.seek_to_beginning(*tps)
                ends = await consumer.end_offsets(tps)
                records: list[ConsumerRecord[bytes, bytes]] = []
                while (
                    len(records) < count
                    if count is not None
                    else any([await consumer.position(tp) < ends[tp] for tp in tps])
                ):
                    batch = await consumer.getmany(timeout_ms=500)
                    for part in batch.values():
                        records.extend(part)
                return records
        finally:
            await consumer.stop()

    return read


async def _partitions(bootstrap: str, topic: str) -> list[TopicPartition]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["partitions"], f"topic {topic} does not exist"
    return [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
