"""The local Apicurio Registry: which Java runs it, and that it serves the ccompat API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.servers.registry import MIN_JAVA, RegistryServerError, java_21, java_major

pytestmark = pytest.mark.anyio

JAVA_17 = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")


def test_the_newest_java_21_or_later_is_found_beside_an_older_one() -> None:
    java = java_21({"PATH": str(JAVA_17.parent)})  # PATH's java is 17: the JVM folders are searched
    major = java_major(java)
    assert major is not None and major >= MIN_JAVA


def test_no_java_21_is_a_clear_error_naming_what_was_found() -> None:
    with pytest.raises(RegistryServerError) as error:
        java_21({"PATH": str(JAVA_17.parent)}, roots=())
    message = str(error.value)
    assert "needs Java 21 or later" in message
    assert "(17)" in message


def test_a_java_home_without_java_is_not_taken() -> None:
    with pytest.raises(RegistryServerError):
        java_21({"PATH": "/nonexistent", "JAVA_HOME": "/nonexistent"}, roots=())


async def test_the_registry_serves_the_confluent_compatible_api(schema_registry: str) -> None:
    assert schema_registry.endswith("/apis/ccompat/v7")
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = await client.get(f"{schema_registry}/subjects")
    assert answer.status_code == 200
    assert isinstance(answer.json(), list)
