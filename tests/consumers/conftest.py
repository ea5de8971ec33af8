"""Shared pieces of the worker tests: settings per test, and a producer for their topic."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from uplink import topology
from uplink.settings import KafkaSettings, Topics, WorkerSettings
from uplink.topics import ensure_topics

SettingsFactory = Callable[..., WorkerSettings]


@pytest.fixture
def make_worker_settings(kafka_bootstrap: str, topics: Topics) -> SettingsFactory:
    """WorkerSettings on this test's own topics, DLQ and group; keywords override."""

    def make(name: str, **overrides: Any) -> WorkerSettings:
        return WorkerSettings(
            name=name,
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
            topics=dataclasses.replace(
                topics,
                messages_partitions=1,
                dlq_pattern=f"{topics.messages}.{{worker}}.dlq",
                redrive_pattern=f"{topics.messages}.{{worker}}.redrive",
            ),
            group_id=f"{name}-{uuid.uuid4().hex[:8]}",
            **overrides,
        )

    return make


@pytest.fixture
async def producer(worker_settings: WorkerSettings) -> AsyncIterator[AIOKafkaProducer]:
    """A started producer, once the test's topics and its worker's DLQ exist (``worker_settings``
    is per module)."""
    await ensure_worker_topics(worker_settings)
    producer = AIOKafkaProducer(bootstrap_servers=worker_settings.kafka.bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()


async def ensure_worker_topics(settings: WorkerSettings) -> None:
    """The topics a worker reads and writes, as the launcher ensures them before it starts:
    uplink's own and its DLQ (the archive's topology: any worker's but the router's)."""
    await ensure_topics(settings.kafka, settings.topics, topology.archive(settings).creates)
