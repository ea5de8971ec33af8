"""The registry client against a real Apicurio Registry: registration, compatibility, ids."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemas import PushCodec, load_push_schema
from tests.conftest import Server
from uplink.broker import free_port
from uplink.exceptions import ConfigError
from uplink.registry.client import (
    COMPATIBILITY,
    Registration,
    RegistryError,
    RegistryUnavailable,
    SchemaRegistry,
    UnknownSchemaId,
)
from uplink.settings import RegistrySettings, Secret, registry_from_env

pytestmark = pytest.mark.anyio


def fresh_subject() -> str:
    return f"test.{uuid.uuid4().hex[:10]}-value"


def text(schema: dict[str, Any]) -> str:
    return json.dumps(schema)


async def test_a_schema_registers_once_under_its_subject(schema_registry: str) -> None:
    subject = fresh_subject()
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        schema_id = await registry.register(subject, PushCodec().text)
        again = await SchemaRegistry(RegistrySettings(schema_registry)).__aenter__()
        try:
            assert await again.register(subject, PushCodec().text) == schema_id  # not a new one
            assert json.loads(await again.schema(schema_id)) == json.loads(PushCodec().text)
            assert await again.versions(subject) == [(schema_id, await again.schema(schema_id))]
        finally:
            await again.stop()


async def test_the_registry_enforces_full_transitive_compatibility(schema_registry: str) -> None:
    subject = fresh_subject()
    v1 = load_push_schema()
    required = {**v1, "fields": [*v1["fields"], {"name": "added", "type": "string"}]}
    optional = {
        **v1,
        "fields": [*v1["fields"], {"name": "added", "type": ["null", "string"], "default": None}],
    }
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        await registry.set_compatibility(subject)
        await registry.register(subject, text(v1))
        assert await registry.compatibility(subject) == COMPATIBILITY == "FULL_TRANSITIVE"
        # A field without a default: an old reader could read it, a new one not the old data.
        assert not await registry.is_compatible(subject, text(required))
        with pytest.raises(RegistryError) as refused:
            await registry.register(subject, text(required))
        assert refused.value.status == 409 and not refused.value.retriable
        assert await registry.is_compatible(subject, text(optional))
        assert await registry.register(subject, text(optional)) != await registry.register(
            subject, text(v1)
        )


async def test_an_unknown_id_and_a_missing_subject(schema_registry: str) -> None:
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        with pytest.raises(UnknownSchemaId) as unknown:
            await registry.schema(2**31 - 1)
        assert not unknown.value.retriable
        assert await registry.versions(fresh_subject()) == []


async def test_a_registry_that_does_not_answer_is_retriable() -> None:
    async with SchemaRegistry(RegistrySettings(f"http://127.0.0.1:{free_port()}")) as registry:
        with pytest.raises(RegistryUnavailable) as down:
            await registry.schema(1)
    assert down.value.retriable


async def test_registration_frames_the_codec_then_says_done(schema_registry: str) -> None:
    codec = PushCodec()
    subject = fresh_subject()
    registry = SchemaRegistry(RegistrySettings(schema_registry))
    async with registry, Registration(registry, subject, codec.text, codec.frame_with) as pending:
        schema_id = await asyncio.wait_for(pending.registered(), 30)
        assert pending.done and pending.problem == ""
        assert codec.schema_id == schema_id == await registry.register(subject, codec.text)
        assert await registry.compatibility(subject) == "FULL_TRANSITIVE"


def test_settings_from_the_environment_keep_the_password_secret() -> None:
    settings = registry_from_env(
        {
            "UPLINK_SCHEMA_REGISTRY_URL": "https://registry:8080/apis/ccompat/v7/",
            "UPLINK_SCHEMA_REGISTRY_USERNAME": "uplink",
            "UPLINK_SCHEMA_REGISTRY_PASSWORD": "hunter2",
            "UPLINK_SCHEMA_REGISTRY_CA_FILE": "/etc/ssl/registry.pem",
            "UPLINK_SCHEMA_REGISTRY_VERIFY": "true",
        }
    )
    assert settings is not None
    assert settings.url == "https://registry:8080/apis/ccompat/v7"
    assert settings.password == Secret("hunter2")
    assert "hunter2" not in repr(settings)
    assert registry_from_env({}) is None


@pytest.mark.parametrize(
    ("environ", "setting"),
    [
        ({"UPLINK_SCHEMA_REGISTRY_URL": "registry:8080"}, "UPLINK_SCHEMA_REGISTRY_URL"),
        (
            {"UPLINK_SCHEMA_REGISTRY_URL": "http://r", "UPLINK_SCHEMA_REGISTRY_USERNAME": "u"},
            "UPLINK_SCHEMA_REGISTRY_USERNAME",
        ),
        (
            {"UPLINK_SCHEMA_REGISTRY_URL": "http://r", "UPLINK_SCHEMA_REGISTRY_VERIFY": "maybe"},
            "UPLINK_SCHEMA_REGISTRY_VERIFY",
        ),
    ],
)
def test_a_bad_registry_setting_is_named(environ: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as error:
        registry_from_env(environ)
    assert error.value.setting == setting


def guarded_registry(credentials: str) -> Starlette:
    """A loopback stand-in for a registry behind basic auth (Apicurio's own needs an OIDC
    server): it answers one schema by id, only to the right credentials."""

    async def schema(request: Request) -> Response:
        expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error_code": 401, "message": "unauthorized"}, 401)
        return JSONResponse({"schema": PushCodec().text})

    return Starlette(routes=[Route("/apis/ccompat/v7/schemas/ids/{id:int}", schema)])


async def test_basic_auth_is_sent_and_a_refusal_is_not_retried(serve: Server) -> None:
    base = await serve(guarded_registry("uplink:hunter2"))
    url = f"{base}/apis/ccompat/v7"
    good = RegistrySettings(url, username="uplink", password=Secret("hunter2"))
    async with SchemaRegistry(good) as registry:
        assert json.loads(await registry.schema(3)) == json.loads(PushCodec().text)
    bad = RegistrySettings(url, username="uplink", password=Secret("wrong"))
    async with SchemaRegistry(bad) as registry:
        with pytest.raises(RegistryError) as refused:
            await registry.schema(3)
    assert refused.value.status == 401 and not refused.value.retriable
    assert "wrong" not in str(refused.value)


async def test_a_registry_that_forbids_setting_the_level_still_registers(serve: Server) -> None:
    async def config(request: Request) -> Response:
        return JSONResponse({"error_code": 40301, "message": "forbidden"}, 403)

    async def versions(request: Request) -> Response:
        return JSONResponse({"id": 42})

    base = await serve(
        Starlette(
            routes=[
                Route("/config/{subject}", config, methods=["PUT"]),
                Route("/subjects/{subject}/versions", versions, methods=["POST"]),
            ]
        )
    )
    codec = PushCodec()
    registry = SchemaRegistry(RegistrySettings(base))
    async with registry, Registration(registry, "s-value", codec.text, codec.frame_with) as pending:
        assert await asyncio.wait_for(pending.registered(), 30) == 42
    assert codec.schema_id == 42


async def test_a_registration_waited_for_gives_up_retriably_saying_why() -> None:
    registry = SchemaRegistry(RegistrySettings(f"http://127.0.0.1:{free_port()}", timeout=0.2))
    async with registry:
        registration = Registration(registry, "s-value", "{}", wait=1.0)
        with pytest.raises(RegistryUnavailable) as down:
            await registration.start()
        await registration.stop()
    assert down.value.retriable
    assert "not registered within 1s: schema registry unreachable" in str(down.value)
