"""The ingress's producer on the session's broker: where its records land, and how it comes back
when the broker refuses its sequence numbers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic

from ingress.exceptions import NotDurable
from ingress.producer import DurableProducer
from tests.conftest import Reader
from uplink._partition import partition
from uplink.kafka import KafkaClients
from uplink.settings import KafkaSettings

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def connected(
    bootstrap: str, topic: str
) -> AsyncIterator[tuple[DurableProducer, AIOKafkaAdminClient]]:
    """A ``DurableProducer``, connected, and an admin client, with ``topic`` made (one
    partition); both stopped after."""
    clients = KafkaClients(KafkaSettings(bootstrap_servers=bootstrap))
    admin = clients.admin()
    await admin.start()
    producer = DurableProducer(clients, timeout=10, max_in_flight=16, linger_ms=0)
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        await producer.start()
        async with asyncio.timeout(30):
            assert producer._connecting is not None
            await producer._connecting  # done once connected
        yield producer, admin
    finally:
        await producer.stop()
        await admin.close()


async def test_a_grown_topic_takes_keys_by_its_new_partition_count(
    kafka_bootstrap: str, read_records: Reader
) -> None:
    """The partition count is kept between sends; new metadata (a topic grown) replaces it."""
    topic = f"test.grown.{uuid.uuid4().hex[:10]}"
    # A key that the grown topic puts elsewhere than partition 0, where one partition puts it.
    key = next(k for n in range(100) if partition(k := b"1:%d" % n, 3) != 0)
    async with connected(kafka_bootstrap, topic) as (producer, admin):
        async with asyncio.timeout(30):
            await producer.send(topic, b"before", key=key)
            await admin.create_partitions({topic: NewPartitions(total_count=3)})
            assert producer._producer is not None
            cluster = producer._producer.client.cluster
            while len(cluster.partitions_for_topic(topic) or ()) < 3:
                await producer._producer.client.force_metadata_update()
        await producer.send(topic, b"after", key=key)
    records = {r.value: r.partition for r in await read_records(topic, count=2)}
    assert records == {b"before": 0, b"after": partition(key, 3)}


async def test_a_refused_sequence_retires_the_producer_and_a_new_one_takes_over(
    kafka_bootstrap: str, read_records: Reader
) -> None:
    """A gap in a partition's sequence (as a batch lost across a broker's restart leaves it):
    the broker refuses that batch and every later one of the producer, for real. The push gets
    503, and the next ones are written by a new producer."""
    topic = f"test.sequence.{uuid.uuid4().hex[:10]}"
    async with connected(kafka_bootstrap, topic) as (producer, _):
        async with asyncio.timeout(30):
            await producer.send(topic, b"before", key=b"k")
            first = producer._producer
            assert first is not None and first._txn_manager is not None
            # The fault: five sequence numbers the broker never saw.
            first._txn_manager.increment_sequence_number(TopicPartition(topic, 0), 5)
            with pytest.raises(NotDurable, match="OutOfOrderSequenceNumber"):
                await producer.send(topic, b"refused", key=b"k")
            assert producer.renewals == 1
            assert producer._connecting is not None
            await producer._connecting  # the new one's, done once it is connected
        assert producer._producer is not first
        await producer.send(topic, b"after", key=b"k")
        assert producer.renewals == 1
    assert [r.value for r in await read_records(topic, count=2)] == [b"before", b"after"]
