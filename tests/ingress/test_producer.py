"""The ingress's producer on the session's broker: where its records land."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.admin import NewPartitions, NewTopic

from ingress.producer import DurableProducer
from tests.conftest import Reader
from uplink._partition import partition
from uplink.kafka import KafkaClients
from uplink.settings import KafkaSettings

pytestmark = pytest.mark.anyio


async def test_a_grown_topic_takes_keys_by_its_new_partition_count(
    kafka_bootstrap: str, read_records: Reader
) -> None:
    """The partition count is kept between sends; new metadata (a topic grown) replaces it."""
    clients = KafkaClients(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    topic = f"test.grown.{uuid.uuid4().hex[:10]}"
    # A key that the grown topic puts elsewhere than partition 0, where one partition puts it.
    key = next(k for n in range(100) if partition(k := b"1:%d" % n, 3) != 0)
    admin = clients.admin()
    await admin.start()
    producer = DurableProducer(clients, timeout=10, max_in_flight=16, linger_ms=0)
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        await producer.start()
        async with asyncio.timeout(30):
            assert producer._connecting is not None
            await producer._connecting  # done once connected
            await producer.send(topic, b"before", key=key)
            await admin.create_partitions({topic: NewPartitions(total_count=3)})
            assert producer._producer is not None
            cluster = producer._producer.client.cluster
            while len(cluster.partitions_for_topic(topic) or ()) < 3:
                await producer._producer.client.force_metadata_update()
        await producer.send(topic, b"after", key=key)
    finally:
        await producer.stop()
        await admin.close()
    records = {r.value: r.partition for r in await read_records(topic, count=2)}
    assert records == {b"before": 0, b"after": partition(key, 3)}
