"""`uplink router` SIGKILLed mid-transaction, restarted each time: a read_committed reader of the
output topics sees every routed push exactly once per rule output, none missing."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader
from tests.consumers.crashes import kill_at_random_moments, run_to_the_end
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CODEC = PushCodec()
UNIQUE = 9_800
RETRIED = 200  # 2 % duplicates, as the provider's retries make them
KILLS = 5
TYPES = ["text", "image", "interactive", "location", "forwarded"]


async def test_sigkill_mid_transaction_leaves_no_duplicate_and_no_gap(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics, read_records: Reader
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    group = f"router-crash-{uuid.uuid4().hex[:8]}"
    out = f"{topics.messages}.out"
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f"""
        [default]
        topic = "{out}.other"
        [[rule]]
        name = "copy"
        match = {{}}
        actions = [{{ topic = "{out}.all" }}]
        continue = true
        [[rule]]
        name = "texts"
        match = {{ type = "text" }}
        actions = [{{ topic = "{out}.texts" }}]
        [[rule]]
        name = "media"
        match = {{ hasMedia = true }}
        actions = [{{ topic = "{out}.media" }}]
        """
    )
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, topics)

    templates = {
        name: orjson.loads(EXAMPLES.joinpath(f"{name}.json").read_bytes()) for name in TYPES
    }
    expected: dict[str, set[str]] = {"all": set(), "texts": set(), "media": set(), "other": set()}
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        deliveries = []
        for n in range(UNIQUE + RETRIED):
            unique = n if n < UNIQUE else rng.randrange(UNIQUE - 1000, UNIQUE)
            kind = TYPES[unique % len(TYPES)]
            message_id = f"crash-{unique}"
            body = {
                **templates[kind],
                "messageId": message_id,
                "from": {"phone": str(910000 + unique % 40)},
            }
            record = CODEC.parse(orjson.dumps(body), int(time.time() * 1000))
            expected["all"].add(message_id)
            # The forwarded example is a text too; "other" (the default) gets nothing.
            bucket = {"text": "texts", "forwarded": "texts", "image": "media"}.get(kind)
            if bucket is not None:
                expected[bucket].add(message_id)
            deliveries.append(
                await producer.send(topics.messages, CODEC.encode(record), key=CODEC.key(record))
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
        "UPLINK_TOPIC_ROUTER_DELAY": f"{topics.messages}.delay.{{step}}",
        "UPLINK_GROUP_ID": group,
        "UPLINK_SESSION_TIMEOUT": "6",  # the broker's minimum: a killed member leaves quickly
        "UPLINK_MAX_BATCH": "200",
        "UPLINK_COMMIT_EVERY": "300",  # transactions of a few hundred records
        "UPLINK_COMMIT_INTERVAL": "0.2",
    }
    command = [sys.executable, "-m", "uplink.cli.main", "router", "--rules", str(rules)]
    log = (tmp_path / "router.log").open("wb")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        kills = await kill_at_random_moments(
            command, env, log, admin, group, total=total, kills=KILLS, rng=rng,
            max_delay=0.15,  # mid-transaction, mid-commit
        )  # fmt: skip
        assert kills == KILLS, f"only {kills} kills before the end (seed {seed})"

        await run_to_the_end(command, env, log, admin, group, total=total)
    finally:
        await admin.close()
        log.close()

    for suffix, ids in expected.items():
        records = await read_records(f"{out}.{suffix}")
        counts = Counter(CODEC.decode(r.value or b"")["messageId"] for r in records)
        twice = [m for m, c in counts.items() if c > 1]
        assert not twice, f"{suffix}: {len(twice)} routed twice (seed {seed})"
        missing = ids - set(counts)
        assert not missing, f"{suffix}: {len(missing)} missing (seed {seed})"
        assert set(counts) == ids, f"{suffix}: unexpected records (seed {seed})"
