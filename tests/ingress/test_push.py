"""A push gets 200 only once it is in Kafka, and its record keeps every field and the raw bytes."""

from __future__ import annotations

import httpx
import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from ingress.app import create_app
from schemas import PushCodec
from tests.conftest import EXAMPLES, SERVERS, Reader, Server, wait_ready
from uplink.settings import IngressSettings

pytestmark = pytest.mark.anyio

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.json"))


@pytest.fixture
async def ingress(serve: Server, ingress_settings: IngressSettings) -> str:
    url = await serve(create_app(ingress_settings))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
    return url


def test_every_spec_example_is_here() -> None:
    names = {path.stem for path in EXAMPLE_FILES}
    assert len(names) == 13, names


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_spec_examples_are_kept_byte_for_byte(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    codec = PushCodec()
    async with httpx.AsyncClient() as client:
        for path in EXAMPLE_FILES:
            response = await client.post(f"{ingress}/v1/uplink", content=path.read_bytes())
            assert response.status_code == 200, (path.name, response.text)
            assert response.json() == {"messageId": orjson.loads(path.read_bytes())["messageId"]}

    records = await read_records(ingress_settings.topics.messages, len(EXAMPLE_FILES))
    by_raw = {codec.decode(record.value)["raw"]: record for record in records}
    for path in EXAMPLE_FILES:
        body = path.read_bytes()
        assert body in by_raw, f"{path.name} not in the topic byte-for-byte"
        record = by_raw[body]
        decoded = codec.decode(record.value)
        pushed = orjson.loads(body)
        assert decoded == codec.parse(body, decoded["receivedAt"])
        assert decoded["messageId"] == pushed["messageId"]
        assert decoded["businessPhone"] == pushed.get("businessPhone")
        assert decoded["from"]["phone"] == pushed["from"]["phone"]
        assert record.key == f"{pushed.get('businessPhone', '')}:{pushed['from']['phone']}".encode()
        assert record.value[:2] == b"\xc3\x01"
        # The Java client's partition for the key, so any producer co-partitions conversations.
        partitions = list(range(ingress_settings.topics.messages_partitions))
        assert record.partition == DefaultPartitioner()(record.key, partitions, partitions)


async def test_quirks_are_normalised_not_rejected(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    quirky = (
        b'{"appId":"a","businessPhone":6395110022481,"channelType":"0",'
        b'"messageId":"q-1","timestamp":"1693396796","eventType":"up-message-event",'
        b'"from":{"name":"n","phone":91856321412},'
        b'"message":{"type":"text","text":{"body":"hi"},'
        b'"context":{"forwarded":"true","frequently_forwarded ":"true"}},'
        b'"brandNewField":{"x":1}}'
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{ingress}/v1/uplink", content=quirky)
    assert response.status_code == 200, response.text
    [record] = await read_records(ingress_settings.topics.messages, 1)
    decoded = PushCodec().decode(record.value)
    assert decoded["businessPhone"] == "6395110022481"
    assert decoded["from"]["phone"] == "91856321412"
    assert decoded["timestamp"] == 1693396796
    assert decoded["message"]["context"]["forwarded"] is True
    assert decoded["message"]["context"]["frequently_forwarded"] is True
    assert decoded["raw"] == quirky  # the unknown field survives here
    assert record.key == b"6395110022481:91856321412"


async def test_unknown_message_types_flow_through(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    reaction = (
        b'{"messageId":"r-1","businessPhone":"1","from":{"phone":"2"},'
        b'"message":{"type":"reaction","reaction":{"emoji":"\xf0\x9f\x91\x8d","message_id":"x"}}}'
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{ingress}/v1/uplink", content=reaction)
    assert response.status_code == 200
    [record] = await read_records(ingress_settings.topics.messages, 1)
    decoded = PushCodec().decode(record.value)
    assert decoded["message"]["type"] == "reaction"
    assert decoded["raw"] == reaction


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_only_a_post_to_the_push_path_is_a_push(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    """The push path skips Starlette's routing; everything else still goes through it."""
    body = (EXAMPLES / "text.json").read_bytes()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{ingress}/v1/uplink")).status_code == 405
        assert (await client.put(f"{ingress}/v1/uplink", content=body)).status_code == 405
        assert (await client.post(f"{ingress}/v1/uplinks", content=body)).status_code == 404
        assert (await client.post(f"{ingress}/v1/uplink", content=body)).status_code == 200
    # Only the one POST reached the topic: all of it, up to the end, is that record.
    [record] = await read_records(ingress_settings.topics.messages)
    assert PushCodec().decode(record.value)["raw"] == body
