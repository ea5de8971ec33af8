"""`uplink media` SIGKILLed at random moments, restarted each time: nothing fetched again once
stored, nothing lost."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas import MediaCodec, PushCodec
from tests.conftest import Reader, Server, s3_location
from tests.consumers.archive.traffic import RECORD_TIME
from tests.consumers.crashes import kill_at_random_moments, run_to_the_end
from tests.consumers.media.server import MediaServer
from tests.consumers.media.test_handler import media_push
from tests.servers.s3 import LocalS3
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CODEC = PushCodec()
EVENTS = MediaCodec()
OBJECTS = 300
PUSHES = 600  # each object comes with two pushes
RETRIED = 10  # the provider's retries: same messageId again
KILLS = 5


@pytest.mark.parametrize("store", ["directory", pytest.param("s3", marks=pytest.mark.s3)])
async def test_sigkill_at_random_moments_fetches_nothing_twice_and_loses_nothing(
    tmp_path: Path,
    kafka_bootstrap: str,
    topics: Topics,
    serve: Server,
    read_records: Reader,
    store: str,
    request: pytest.FixtureRequest,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    root = tmp_path / "media"
    media_dir, store_env = str(root), {}
    if store == "s3":
        # The bucket's objects are files of the S3 server's posix backend: looked at there.
        s3_server: LocalS3 = request.getfixturevalue("s3_server")
        location = s3_location(s3_server, prefix="media")
        media_dir = str(location)
        root = s3_server.settings.data_dir / location.bucket / "media"
        store_env = {**s3_server.settings.environ(), "UPLINK_MEDIA_WORK_DIR": str(tmp_path / "w")}
    server = MediaServer(delay=0.05)  # downloads overlap and a kill lands mid-way
    blobs = {f"{n}.bin": os.urandom(20 * 1024) for n in range(OBJECTS)}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
    refetched: list[str] = []

    def on_request(path: str) -> None:
        # One worker process runs at a time and looks in the store before it fetches: a
        # request for an object that is already stored is a fetch after it was stored.
        digest = digests[path.rsplit("/", 1)[1]]
        if (root / "sha256" / digest[:2] / digest).exists():
            refetched.append(path)

    server.on_request = on_request
    base = await serve(server.app())
    shas = {name: server.add(name, data) for name, data in blobs.items()}

    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    await ensure_topics(kafka, topics)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    sent: set[str] = set()
    try:
        deliveries = []
        for n in range(PUSHES + RETRIED):
            unique = n if n < PUSHES else rng.randrange(PUSHES)
            name = f"{unique % OBJECTS}.bin"
            message_id = f"crash-{unique}"
            sent.add(message_id)
            raw = media_push("image", message_id, f"{base}/files/{name}", shas[name])
            record = CODEC.parse(raw, RECORD_TIME)
            deliveries.append(
                await producer.send(
                    topics.messages,
                    CODEC.encode(record),
                    key=f"conversation-{unique % 7}".encode(),
                    timestamp_ms=RECORD_TIME + n,
                )
            )
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
    total = PUSHES + RETRIED

    group = f"media-crash-{uuid.uuid4().hex[:8]}"
    dlq = f"{topics.messages}.media.dlq"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "UPLINK_TOPIC_MESSAGES": topics.messages,
        "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
        "UPLINK_TOPIC_MEDIA": topics.media,
        "UPLINK_TOPIC_DLQ": f"{topics.messages}.{{worker}}.dlq",
        "UPLINK_GROUP_ID": group,
        "UPLINK_SESSION_TIMEOUT": "6",  # the broker's minimum: a killed member leaves quickly
        "UPLINK_COMMIT_INTERVAL": "0.2",
        "UPLINK_MAX_BATCH": "50",
        "UPLINK_MEDIA_ALLOW_HOSTS": "127.0.0.1",
        "UPLINK_MEDIA_CONCURRENCY": "8",
        **store_env,
    }
    command = [
        sys.executable, "-m", "uplink.cli.main", "--log-level", "INFO", "media",
        "--media-dir", media_dir,
    ]  # fmt: skip
    log = (tmp_path / "worker.log").open("wb")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        kills = await kill_at_random_moments(
            command, env, log, admin, group, total=total, kills=KILLS, rng=rng,
            max_delay=0.1,  # mid-download, mid-rename, mid-send
        )  # fmt: skip
        assert kills == KILLS, f"only {kills} kills before the end (seed {seed})"

        await run_to_the_end(command, env, log, admin, group, total=total)
    finally:
        await admin.close()
        log.close()

    assert refetched == [], f"fetched again after being stored (seed {seed})"
    for name, data in blobs.items():
        digest = digests[name]
        assert (root / "sha256" / digest[:2] / digest).read_bytes() == data, name
    events = await read_records(topics.media)
    announced = {EVENTS.decode(r.value)["messageId"] for r in events}
    assert announced == sent, f"{len(sent - announced)} pushes not announced (seed {seed})"
    assert await read_records(dlq) == []
    # Downloads a kill interrupted before the rename are fetched again: that is allowed.
    assert len(server.hits) >= OBJECTS
