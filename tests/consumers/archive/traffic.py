"""What the archive's crash tests share: their traffic (pushes over three event hours, with the
provider's retries), the worker's environment, and the exactly-once check."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from schemas import PushCodec
from tests.conftest import EXAMPLES
from uplink.settings import Topics

CODEC = PushCodec()
TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
HOUR_10 = 1_700_042_400  # seconds, UTC: the pushes' event time
# Record time stays recent, or the broker's 7-day retention deletes the test's data mid-run.
RECORD_TIME = time.time_ns() // 1_000_000 - 4 * 3_600_000  # and never more than 1 h ahead


Push = tuple[bytes, bytes, int]  # key, value, record time (ms)


def pushes(rng: random.Random, *, unique: int, retried: int) -> tuple[list[Push], dict[str, bytes]]:
    """``unique`` pushes over three event hours and 50 conversations, then ``retried`` retries
    of recent ones (as the provider's make them); and each messageId's raw body."""
    sent: dict[str, bytes] = {}
    made: list[Push] = []
    for n in range(unique + retried):
        # Retries of the last tenth: within the dedupe window (1 h) of the log's newest.
        one = n if n < unique else rng.randrange(unique - unique // 10, unique)
        message_id = f"crash-{one}"
        event = HOUR_10 + one * 3600 * 3 // unique
        raw = orjson.dumps(
            {
                **TEMPLATE,
                "messageId": message_id,
                "timestamp": event,
                "from": {"phone": str(910000 + one % 50)},
            }
        )
        sent.setdefault(message_id, raw)
        record = CODEC.parse(sent[message_id], event * 1000)
        stamp = RECORD_TIME + (event - HOUR_10) * 1000 + (n >= unique) * 120_000
        made.append((CODEC.key(record), CODEC.encode(record), stamp))
    return made, sent


async def send(bootstrap: str, topic: str, records: list[Push], per_second: float = 0) -> None:
    """Produce ``records`` in order: at once, or at about ``per_second`` (steady traffic)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        deliveries = []
        for n, (key, value, stamp) in enumerate(records):
            deliveries.append(await producer.send(topic, value, key=key, timestamp_ms=stamp))
            if per_second and n % 10 == 9:
                await asyncio.sleep(10 / per_second)  # the pace of the traffic itself
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


async def produce(
    bootstrap: str, topic: str, rng: random.Random, *, unique: int, retried: int
) -> dict[str, bytes]:
    """``pushes`` produced at once; returns each messageId's raw body."""
    made, sent = pushes(rng, unique=unique, retried=retried)
    await send(bootstrap, topic, made)
    return sent


def worker_env(bootstrap: str, topics: Topics, group: str, **more: str) -> dict[str, str]:
    """An archive worker process's environment on the test's topics and group."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "UPLINK_TOPIC_MESSAGES": topics.messages,
        "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
        "UPLINK_TOPIC_MEDIA": topics.media,
        "UPLINK_TOPIC_DLQ": f"{topics.messages}.{{worker}}.dlq",
        "UPLINK_GROUP_ID": group,
        "UPLINK_SESSION_TIMEOUT": "6",  # the broker's minimum: a killed member leaves quickly
        "UPLINK_MAX_BATCH": "100",
        **more,
    }


def assert_exactly_once(
    archived: Iterable[Mapping[str, Any]], sent: Mapping[str, bytes], seed: int
) -> None:
    records = list(archived)
    counts = Counter(record["messageId"] for record in records)
    twice = [message_id for message_id, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} pushes archived more than once (seed {seed})"
    assert set(counts) == set(sent), f"{len(set(sent) - set(counts))} lost (seed {seed})"
    assert all(record["raw"] == sent[str(record["messageId"])] for record in records)
