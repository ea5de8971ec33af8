"""With UPLINK_TOKEN set, a push needs the token as a Bearer header or a ?token= parameter."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from ingress.app import create_app
from tests.conftest import EXAMPLES, SERVERS, Reader, Server, wait_ready
from uplink.settings import IngressSettings, Secret

pytestmark = pytest.mark.anyio

BODY = EXAMPLES.joinpath("text.json").read_bytes()


@pytest.fixture
async def guarded(serve: Server, ingress_settings: IngressSettings) -> tuple[str, IngressSettings]:
    settings = dataclasses.replace(ingress_settings, token=Secret("s3cret-token"))
    url = await serve(create_app(settings))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
    return url, settings


@pytest.mark.parametrize("server", SERVERS, indirect=True)
@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"authorization": "Bearer wrong"}, ""),
        ({"authorization": "Basic czNjcmV0LXRva2Vu"}, ""),
        ({}, "?token=s3cret-toke"),
        ({}, "?token="),
    ],
)
async def test_missing_or_wrong_token_is_401_and_nothing_is_kept(
    guarded: tuple[str, IngressSettings],
    read_records: Reader,
    headers: dict[str, str],
    query: str,
) -> None:
    url, settings = guarded
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/uplink{query}", content=BODY, headers=headers)
    assert response.status_code == 401
    assert await read_records(settings.topics.messages) == []
    assert await read_records(settings.topics.quarantine) == []


@pytest.mark.parametrize("server", SERVERS, indirect=True)
@pytest.mark.parametrize(
    ("headers", "query"),
    [({"authorization": "Bearer s3cret-token"}, ""), ({}, "?token=s3cret-token")],
)
async def test_right_token_is_accepted(
    guarded: tuple[str, IngressSettings],
    read_records: Reader,
    headers: dict[str, str],
    query: str,
) -> None:
    url, settings = guarded
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/v1/uplink{query}", content=BODY, headers=headers)
    assert response.status_code == 200
    assert len(await read_records(settings.topics.messages, 1)) == 1
