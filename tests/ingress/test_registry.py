"""The ingress with a schema registry: the push schema registered at start-up, records in the
Confluent wire format that the Kafka ecosystem's own deserializer reads, not ready (503) until
registered, and a registry that goes down later does not touch the hot path."""

from __future__ import annotations

import asyncio
import datetime

import httpx
import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from ingress.app import create_app
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader, Server, wait_ready
from tests.servers.registry import LocalRegistry
from uplink.broker import free_port
from uplink.registry.client import SchemaRegistry, SubjectSchemas, subject
from uplink.settings import IngressSettings, RegistrySettings

pytestmark = pytest.mark.anyio

KINDS = ("text", "image", "contacts", "location")


async def test_records_are_confluent_framed_with_the_registered_id(
    serve: Server, ingress_settings: IngressSettings, schema_registry: str, read_records: Reader
) -> None:
    settings = IngressSettings(
        kafka=ingress_settings.kafka,
        topics=ingress_settings.topics,
        registry=RegistrySettings(schema_registry),
    )
    topic = settings.topics.messages
    url = await serve(create_app(settings))
    bodies = [EXAMPLES.joinpath(f"{kind}.json").read_bytes() for kind in KINDS]
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
        for body in bodies:
            assert (await client.post(f"{url}/v1/uplink", content=body)).status_code == 200
    records = await read_records(topic, len(bodies))
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        schema_id = await registry.register(subject(topic), PushCodec().text)
        assert await registry.compatibility(subject(topic)) == "FULL_TRANSITIVE"
        reader = PushCodec(lookup=SubjectSchemas(registry, subject(topic)))
        values = [record.value for record in records]
        assert await reader.learn(values)  # the id, fetched from the registry
    for value in values:
        assert value is not None
        assert value[:1] == b"\x00" and int.from_bytes(value[1:5], "big") == schema_id
    decoded = {reader.decode(value)["messageId"]: reader.decode(value) for value in values}
    expected = {orjson.loads(body)["messageId"]: body for body in bodies}
    assert {key: record["raw"] for key, record in decoded.items()} == expected
    assert reader.heads(values).ids == [reader.decode(value)["messageId"] for value in values]

    # The Kafka ecosystem's reader: confluent-kafka's deserializer, through the registry, told
    # the subject naming the ingress registers under (TOPIC: "<topic>-value"). Its default,
    # ASSOCIATED, first asks an associations API Apicurio does not have, and Apicurio leaves
    # about 1 in 100 requests to a path it has no route for unanswered (5 of 400 by curl).
    def deserialized() -> list[dict[str, object]]:
        with SchemaRegistryClient({"url": schema_registry, "timeout": 30}) as client:
            deserializer = AvroDeserializer(client, conf={"subject.name.strategy.type": "TOPIC"})
            context = SerializationContext(topic, MessageField.VALUE)
            return [deserializer(value, context) for value in values]

    independent = await asyncio.to_thread(deserialized)
    for record in independent:
        ours = decoded[str(record["messageId"])]
        assert record["raw"] == ours["raw"]
        assert record["message"] == ours["message"]
        received = record["receivedAt"]
        assert isinstance(received, datetime.datetime)
        assert int(received.timestamp() * 1000) == ours["receivedAt"]


async def test_not_ready_until_registered_then_a_registry_outage_is_not_seen(
    serve: Server,
    ingress_settings: IngressSettings,
    own_registry: object,
    read_records: Reader,
) -> None:
    port = free_port()
    registry_settings = RegistrySettings(f"http://127.0.0.1:{port}/apis/ccompat/v7", timeout=1)
    settings = IngressSettings(
        kafka=ingress_settings.kafka, topics=ingress_settings.topics, registry=registry_settings
    )
    url = await serve(create_app(settings))
    body = EXAMPLES.joinpath("text.json").read_bytes()
    async with httpx.AsyncClient() as client:
        # No registry yet: not ready, and a push is refused with a retry, not written.
        ready = await client.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("schema not registered")
        refused = await client.post(f"{url}/v1/uplink", content=body)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == str(settings.retry_after)
        assert "schema not registered" in refused.json()["reason"]
        metrics = (await client.get(f"{url}/metrics")).text
        assert 'uplink_ingress_shed_total{cause="schema"} 1.0' in metrics

        # The registry comes up: the background registration finds it.
        assert callable(own_registry)
        registry: LocalRegistry = await asyncio.to_thread(own_registry, port)
        await wait_ready(client, url, timeout=90)
        assert (await client.post(f"{url}/v1/uplink", content=body)).status_code == 200

        # It goes away: the id is cached, the hot path never asks it again.
        await asyncio.to_thread(registry.stop)
        bodies = [EXAMPLES.joinpath(f"{kind}.json").read_bytes() for kind in KINDS]
        for other in bodies:
            assert (await client.post(f"{url}/v1/uplink", content=other)).status_code == 200
        assert (await client.get(f"{url}/readyz")).status_code == 200
    records = await read_records(settings.topics.messages, 1 + len(bodies))
    assert len({bytes(record.value[:5]) for record in records if record.value}) == 1
    assert all(record.value and record.value[:1] == b"\x00" for record in records)
