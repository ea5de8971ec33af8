"""Topics are created when missing, with the contract's partition counts, and only once."""

from __future__ import annotations

import dataclasses

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

pytestmark = pytest.mark.anyio


async def test_missing_topics_are_created_once(kafka_bootstrap: str, topics: Topics) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    topics = dataclasses.replace(topics, messages_partitions=12)
    created = await ensure_topics(kafka, topics)
    assert sorted(created) == sorted(
        [topics.messages, topics.quarantine, topics.media, topics.statuses, topics.meta_events]
    )
    assert await ensure_topics(kafka, topics) == []

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(
            [topics.messages, topics.quarantine, topics.statuses]
        )
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    # Statuses are keyed by conversation, as the messages are: as many partitions.
    assert partitions == {topics.messages: 12, topics.quarantine: 1, topics.statuses: 12}
