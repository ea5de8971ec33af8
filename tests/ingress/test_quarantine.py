"""A body that is not a push gets a 4xx with a reason, and is kept in the quarantine topic first."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from ingress.app import create_app
from tests.conftest import EXAMPLES, SERVERS, Reader, Server, wait_ready
from uplink.settings import IngressSettings

pytestmark = pytest.mark.anyio

BAD_BODIES = {
    "not JSON": (b"hello, world", "JSON"),
    "truncated": (EXAMPLES.joinpath("text.json").read_bytes()[:-20], "JSON"),
    "array": (b'[{"messageId": "x"}]', "array"),
    "empty": (b"", "empty"),
    "no messageId": (b'{"appId": "a", "from": {"phone": "1"}}', "messageId"),
    "blank messageId": (b'{"messageId": "  "}', "messageId"),
    "invalid UTF-8": (b'{"messageId": "\xff\xfe"}', "UTF-8"),
}


@pytest.mark.parametrize("server", SERVERS, indirect=True)
@pytest.mark.parametrize("case", sorted(BAD_BODIES))
async def test_bad_body_is_400_and_quarantined(
    case: str,
    serve: Server,
    ingress_settings: IngressSettings,
    read_records: Reader,
) -> None:
    body, says = BAD_BODIES[case]
    url = await serve(create_app(ingress_settings))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
        response = await client.post(
            f"{url}/v1/uplink", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert response.json()["error"] == "not a push"
    assert says in response.json()["reason"]

    [kept] = await read_records(ingress_settings.topics.quarantine, 1)
    assert kept.value == body
    headers = dict(kept.headers)
    assert headers["uplink-reason"].decode() == response.json()["reason"]
    assert headers["uplink-content-type"] == b"application/json"
    assert int(headers["uplink-received-at"]) > 0
    assert await read_records(ingress_settings.topics.messages) == []


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_too_large_is_413_before_the_rest_is_sent_and_quarantined(
    serve: Server, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    settings = dataclasses.replace(ingress_settings, max_body_bytes=64 * 1024)
    url = await serve(create_app(settings))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)

    # Announce 10 MiB, send only 100 KiB and wait: the answer must come from the streamed part.
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        "POST /v1/uplink HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10 * 1024 * 1024}\r\n\r\n"
    )
    writer.write(head.encode() + b'{"messageId": "big", "pad": "' + b"x" * 100 * 1024)
    await writer.drain()
    async with asyncio.timeout(10):
        status_line = await reader.readline()
        while (await reader.readline()) != b"\r\n":
            pass
        payload = await reader.read(4096)
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 413"), status_line
    assert b"65536" in payload

    [kept] = await read_records(settings.topics.quarantine, 1)
    assert kept.value.startswith(b'{"messageId": "big"')
    assert len(kept.value) == settings.max_body_bytes
    headers = dict(kept.headers)
    assert headers["uplink-truncated"] == b"true"
    assert headers["uplink-content-length"] == str(10 * 1024 * 1024).encode()
