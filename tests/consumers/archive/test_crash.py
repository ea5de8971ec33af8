"""`uplink archive` SIGKILLed at random moments, restarted each time: every push archived once."""

from __future__ import annotations

import random
import sys
import uuid
from pathlib import Path

import fastavro
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.consumers.archive.traffic import assert_exactly_once, produce, worker_env
from tests.consumers.crashes import kill_at_random_moments, run_to_the_end
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

UNIQUE = 19_600
RETRIED = 400  # 2 % duplicates, as the provider's retries make them
KILLS = 10


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    group = f"archive-crash-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, topics)

    sent = await produce(kafka_bootstrap, topics.messages, rng, unique=UNIQUE, retried=RETRIED)
    total = UNIQUE + RETRIED

    env = worker_env(kafka_bootstrap, topics, group)
    root = tmp_path / "archive"
    command = [
        sys.executable, "-m", "uplink.cli.main", "--log-level", "INFO", "archive",
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
    assert_exactly_once(archived, sent, seed)
