"""`uplink topics` creates the deployment's topics from the environment, once, and exits."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from uplink.broker import free_port

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str


async def uplink_topics(env: dict[str, str], *args: str) -> Run:
    """The verb as a deployment runs it: its own process, settings from the environment only."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("UPLINK_", "KAFKA_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uplink.cli.main",
        "topics",
        *args,
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(120):
        stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, stdout.decode(), stderr.decode())


@pytest.fixture
def topic_env(kafka_bootstrap: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "UPLINK_TOPIC_MESSAGES": f"test.messages.{suffix}",
        "UPLINK_TOPIC_QUARANTINE": f"test.quarantine.{suffix}",
        "UPLINK_TOPIC_MEDIA": f"test.media.{suffix}",
        "UPLINK_TOPIC_STATUSES": f"test.statuses.{suffix}",
        "UPLINK_TOPIC_META_EVENTS": f"test.meta-events.{suffix}",
        "UPLINK_TOPIC_DLQ": f"test.{{worker}}.dlq.{suffix}",
        "UPLINK_MESSAGES_PARTITIONS": "5",
        "UPLINK_TOPIC_PARTITIONS": "2",
        "UPLINK_KAFKA_MAX_REQUEST_SIZE": str(3 * 1024 * 1024),
    }


async def test_creates_every_topic_from_the_environment_then_nothing(
    kafka_bootstrap: str, topic_env: dict[str, str]
) -> None:
    first = await uplink_topics(topic_env)
    assert first.code == 0, first.stderr
    suffix = topic_env["UPLINK_TOPIC_MESSAGES"].rpartition(".")[2]
    expected = {
        f"test.messages.{suffix}": 5,
        f"test.quarantine.{suffix}": 2,
        f"test.media.{suffix}": 2,
        f"test.statuses.{suffix}": 5,
        f"test.meta-events.{suffix}": 2,
        f"test.archive.dlq.{suffix}": 2,
        f"test.media.dlq.{suffix}": 2,
        f"test.router.dlq.{suffix}": 2,
    }
    assert {
        line.split()[1] for line in first.stdout.splitlines() if line.startswith("created ")
    } == set(expected)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(list(expected))
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in expected]
        )
    finally:
        await admin.close()
    assert {d["topic"]: len(d["partitions"]) for d in described} == expected
    max_bytes = {
        name: value
        for response in configs
        for _, _, _, name, entries in response.resources
        for key, value, *_ in entries
        if key == "max.message.bytes"
    }
    assert max_bytes == {name: str(3 * 1024 * 1024) for name in expected}

    again = await uplink_topics(topic_env)
    assert again.code == 0, again.stderr
    assert "(0 created)" in again.stdout
    assert not [line for line in again.stdout.splitlines() if line.startswith("created ")]


async def test_dlq_workers_are_chosen_on_the_command_line(
    kafka_bootstrap: str, topic_env: dict[str, str]
) -> None:
    run = await uplink_topics(topic_env, "--dlq", "archive")
    assert run.code == 0, run.stderr
    created = {line.split()[1] for line in run.stdout.splitlines() if line.startswith("created ")}
    assert {name for name in created if ".dlq." in name} == {
        topic_env["UPLINK_TOPIC_DLQ"].replace("{worker}", "archive")
    }


async def test_an_unreachable_broker_fails_naming_it(topic_env: dict[str, str]) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    run = await uplink_topics({**topic_env, "KAFKA_BOOTSTRAP_SERVERS": nobody})
    assert run.code == 75  # EX_TEMPFAIL: a retriable failure, a supervisor may restart it
    assert f"uplink: cannot create topics on {nobody}" in run.stderr
    assert "Traceback" not in run.stderr


async def test_a_bad_setting_stops_it_naming_the_variable(topic_env: dict[str, str]) -> None:
    run = await uplink_topics({**topic_env, "UPLINK_TOPIC_PARTITIONS": "0"})
    assert run.code == 78
    assert "configuration error: UPLINK_TOPIC_PARTITIONS" in run.stderr
