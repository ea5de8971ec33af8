"""Group commit at the edge, on the session's broker: shared batches, order, deadlines, bounds."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ingress.batches import MAX_BATCHES_PER_PARTITION, PartitionBatches
from ingress.exceptions import NotDurable, Overloaded
from tests.conftest import Reader

pytestmark = pytest.mark.anyio

MakeTopic = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_topic(kafka_bootstrap: str) -> AsyncIterator[MakeTopic]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()

    async def make(partitions: int = 1) -> str:
        name = f"test.batches.{uuid.uuid4().hex[:10]}"
        await admin.create_topics([NewTopic(name, partitions, 1)])
        return name

    try:
        yield make
    finally:
        await admin.close()


@pytest.fixture
async def deleted_topic(
    kafka_bootstrap: str, make_topic: MakeTopic, producer: AIOKafkaProducer
) -> str:
    """A topic of two partitions the producer knows, deleted since: a real broker that never
    acknowledges (it refuses each batch with a retriable error, and aiokafka retries)."""
    topic = await make_topic(2)
    await producer.partitions_for(topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    return topic


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=2000,  # a deleted topic's batches expire soon after the test
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def test_pushes_of_one_moment_share_a_batch_and_keep_their_order(
    make_topic: MakeTopic, producer: AIOKafkaProducer, read_records: Reader
) -> None:
    topic = await make_topic()
    await producer.partitions_for(topic)
    batches = PartitionBatches(producer, timeout=10)
    batches.start()
    try:
        first = [batches.append(topic, 0, b"k", b"%d" % i, []) for i in range(100)]
        await asyncio.gather(*first)
        # One more round, while nothing is queued: order holds across batches too.
        second = [batches.append(topic, 0, b"k", b"%d" % i, []) for i in range(100, 150)]
        await asyncio.gather(*second)
    finally:
        batches.stop()
    records = await read_records(topic, 150)
    assert [r.value for r in records] == [b"%d" % i for i in range(150)]
    # 150 records, a handful of requests: the 100 appended in one moment went as one batch.
    assert batches.opened <= 3, batches.opened


async def test_a_batch_kafka_refuses_answers_each_of_its_pushes(
    make_topic: MakeTopic, producer: AIOKafkaProducer
) -> None:
    topic = await make_topic(partitions=1)
    await producer.partitions_for(topic)
    batches = PartitionBatches(producer, timeout=10)
    batches.start()
    try:
        # Partition 7 of a one-partition topic: aiokafka refuses the batch as a whole.
        waiters = [batches.append(topic, 7, b"k", b"v", []) for _ in range(3)]
        results = await asyncio.gather(*waiters, return_exceptions=True)
    finally:
        batches.stop()
    assert all(isinstance(r, NotDurable) for r in results), results
    assert len({id(r) for r in results}) == 3  # one exception each, not a shared traceback


async def test_a_batch_never_acknowledged_is_answered_at_its_deadline(
    deleted_topic: str, producer: AIOKafkaProducer
) -> None:
    topic = deleted_topic
    batches = PartitionBatches(producer, timeout=0.3, tick=0.02)
    batches.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        with pytest.raises(NotDurable, match=r"no acknowledgement from Kafka within 0\.3s"):
            await batches.append(topic, 0, b"k", b"v", [])
        assert 0.3 <= loop.time() - started < 0.3 + 0.02 + 0.5  # a tick, plus a loaded machine
    finally:
        batches.stop()


async def test_a_partition_holds_a_bounded_number_of_batches(
    deleted_topic: str, producer: AIOKafkaProducer
) -> None:
    topic = deleted_topic
    batches = PartitionBatches(producer, timeout=30)
    batches.start()
    big = b"x" * 12_000  # one record fills a 16 KB batch
    waiters = []
    try:
        for _ in range(MAX_BATCHES_PER_PARTITION):
            waiters.append(batches.append(topic, 0, b"k", big, []))
        with pytest.raises(Overloaded, match=f"{MAX_BATCHES_PER_PARTITION} batches"):
            batches.append(topic, 0, b"k", big, [])
        # Another partition is not held back by this one.
        waiters.append(batches.append(topic, 1, b"k", b"v", []))
    finally:
        batches.stop()
    # Stopping answers every push still waiting, rather than leaving it to wait for ever.
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, NotDurable) and "stopped" in str(r) for r in results), results
