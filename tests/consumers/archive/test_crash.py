"""`uplink archive` SIGKILLed at random moments, restarted each time: every push archived once."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import fastavro
import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas import PushCodec
from tests.conftest import EXAMPLES
from tests.consumers.crashes import kill_at_random_moments, run_to_the_end
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CODEC = PushCodec()
TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
UNIQUE = 19_600
RETRIED = 400  # 2 % duplicates, as the provider's retries make them
KILLS = 10
HOUR_10 = 1_700_042_400  # seconds, UTC: the pushes' event time
# Record time stays recent, or the broker's 7-day retention deletes the test's data mid-run.
RECORD_TIME = time.time_ns() // 1_000_000 - 4 * 3_600_000  # and never more than 1 h ahead


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    group = f"archive-crash-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, topics)

    # 20,000 records over three event hours and 50 conversations; 2 % are retries.
    sent: dict[str, bytes] = {}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        deliveries = []
        for n in range(UNIQUE + RETRIED):
            unique = n if n < UNIQUE else rng.randrange(UNIQUE - 2000, UNIQUE)
            message_id = f"crash-{unique}"
            event = HOUR_10 + unique * 3600 * 3 // UNIQUE
            raw = orjson.dumps(
                {
                    **TEMPLATE,
                    "messageId": message_id,
                    "timestamp": event,
                    "from": {"phone": str(910000 + unique % 50)},
                }
            )
            sent.setdefault(message_id, raw)
            record = CODEC.parse(sent[message_id], event * 1000)
            deliveries.append(
                await producer.send(
                    topics.messages,
                    CODEC.encode(record),
                    key=CODEC.key(record),
                    timestamp_ms=RECORD_TIME + (event - HOUR_10) * 1000 + (n >= UNIQUE) * 120_000,
                )
            )
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    total = UNIQUE + RETRIED

    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "UPLINK_TOPIC_MESSAGES": topics.messages,
        "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
        "UPLINK_TOPIC_MEDIA": topics.media,
        "UPLINK_TOPIC_DLQ": f"{topics.messages}.{{worker}}.dlq",
        "UPLINK_GROUP_ID": group,
        "UPLINK_SESSION_TIMEOUT": "6",  # the broker's minimum: a killed member leaves quickly
        "UPLINK_MAX_BATCH": "100",
    }
    root = tmp_path / "archive"
    command = [
        sys.executable, "-m", "cli.main", "--log-level", "INFO", "archive",
        "--archive-dir", str(root), "--max-records", "200", "--flush-interval", "0.3",
    ]  # fmt: skip
    log = (tmp_path / "worker.log").open("wb")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        kills = await kill_at_random_moments(
            command, env, log, admin, group, total=total, kills=KILLS, rng=rng,
            max_delay=0.03,  # mid-file, mid-batch, mid-rename: the worker archives ~50k records/s
        )  # fmt: skip
        assert kills == KILLS, f"only {kills} kills before the end (seed {seed})"

        await run_to_the_end(command, env, log, admin, group, total=total)
    finally:
        await admin.close()
        log.close()

    assert not list(root.rglob("*.tmp")), f"temporary files left (seed {seed})"
    archived: list[dict[str, object]] = []
    for path in sorted(root.rglob("*.avro")):
        with path.open("rb") as stream:
            archived.extend(fastavro.reader(stream))  # type: ignore[arg-type]
    counts = Counter(record["messageId"] for record in archived)
    twice = [message_id for message_id, n in counts.items() if n > 1]
    assert not twice, f"{len(twice)} pushes archived more than once (seed {seed})"
    assert set(counts) == set(sent), f"{len(set(sent) - set(counts))} lost (seed {seed})"
    assert all(record["raw"] == sent[str(record["messageId"])] for record in archived)
