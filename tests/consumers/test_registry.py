"""Workers with a schema registry, on a real broker: records of either framing and of an older
or newer writer schema are read as the worker's own (the archive keeps one writer schema per
file, under it); the media worker registers its events' schema and frames them with its id."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import fastavro
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumers.archive.replay import archived_records
from consumers.archive.settings import ArchiveSettings
from consumers.media.settings import MediaSettings
from schemas import MediaCodec, PushCodec
from schemas.writers import released_schemas
from tests.conftest import EXAMPLES, Reader, Server
from tests.consumers.conftest import SettingsFactory, ensure_worker_topics
from tests.consumers.media.server import MediaServer
from tests.consumers.media.test_handler import media_push
from uplink.cli import workers
from uplink.cli.launcher import started
from uplink.registry.client import SchemaRegistry, subject
from uplink.settings import RegistrySettings

pytestmark = pytest.mark.anyio

V1 = released_schemas("push")[0]
V2 = json.loads(Path(__file__).parent.parent.joinpath("schemas/evolution/push-v2.avsc").read_text())
TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
EVENT_SECONDS = 1_700_042_400  # one event hour: files rotate only for a change of writer
RECORD_TIME = time.time_ns() // 1_000_000 - 3_600_000  # recent, or retention deletes it


def body(message_id: str) -> bytes:
    return orjson.dumps({**TEMPLATE, "messageId": message_id, "timestamp": EVENT_SECONDS})


async def test_the_archive_reads_both_framings_and_both_versions_one_file_per_writer(
    make_worker_settings: SettingsFactory,
    schema_registry: str,
    tmp_path: Path,
    read_records: Reader,
) -> None:
    registry_settings = RegistrySettings(schema_registry)
    settings = make_worker_settings(
        "archive", registry=registry_settings, commit_every=1_000_000, commit_interval=3600
    )
    topic = settings.topics.messages
    await ensure_worker_topics(settings)
    v1, v1_registered, v2, v2_registered = (
        PushCodec(V1),
        PushCodec(V1),
        PushCodec(V2),
        PushCodec(V2),
    )
    async with SchemaRegistry(registry_settings) as registry:
        await registry.set_compatibility(subject(topic))
        v1_registered.frame_with(await registry.register(subject(topic), v1.text))
        v2_registered.frame_with(await registry.register(subject(topic), v2.text))
    # In log order: v1 from before the registry, v1 and v2 through it, an id no registry
    # has (dead-lettered), v2 single-object; each run its own file.
    runs = [(v1, "old"), (v1_registered, "v1"), (v2_registered, "v2"), (v2, "v2so")]
    unknown = b"\x00\x7f\xff\xff\xf0" + v1.encode(v1.parse(body("lost"), 0))[10:]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    sent: list[str] = []
    async with producer:
        for codec, name in runs:
            for n in range(3):
                message_id = f"{name}-{n}"
                record = codec.parse(body(message_id), RECORD_TIME)
                if codec in (v2, v2_registered):
                    record["deliveredVia"] = "edge-7"
                await producer.send_and_wait(topic, codec.encode(record), timestamp_ms=RECORD_TIME)
                sent.append(message_id)
            if name == "v2":
                await producer.send_and_wait(topic, unknown, timestamp_ms=RECORD_TIME)

    archive = ArchiveSettings(root=tmp_path / "archive")
    async with started(workers.archive(settings, archive)) as assembly:
        worker = assembly.workers[0]  # then its re-drive reader
        assert await worker.run(count=len(sent) + 1, timeout=90) == len(sent) + 1

    files = sorted(archive.root.rglob("*.avro"), key=lambda p: int(p.stem.rpartition("+")[2]))
    assert len(files) == len(runs)
    read = [[r["messageId"] for r in archived_records(path)] for path in files]
    assert read == [[f"{name}-{n}" for n in range(3)] for _, name in runs]
    schemas = []
    for path in files:
        with path.open("rb") as stream:
            schemas.append(fastavro.reader(stream).writer_schema)
    assert ["deliveredVia" in json.dumps(schema) for schema in schemas] == [
        False,
        False,
        True,
        True,
    ]
    assert all("deliveredVia" not in r for path in files for r in archived_records(path))
    assert [r["deliveredVia"] for r in archived_records(files[2], V2)] == ["edge-7"] * 3

    [dead] = await read_records(settings.dlq, 1)
    assert dead.value == unknown
    reason = dict(dead.headers)["uplink-dlq-reason"].decode()
    assert reason == (
        f"undecodable: unknown writer schema: registry id {0x7FFFFFF0} (not in the schema registry)"
    )


async def test_the_media_worker_registers_its_events_and_frames_them_with_the_id(
    make_worker_settings: SettingsFactory,
    schema_registry: str,
    serve: Server,
    tmp_path: Path,
    read_records: Reader,
) -> None:
    registry_settings = RegistrySettings(schema_registry)
    settings = make_worker_settings("media", registry=registry_settings, commit_interval=0.2)
    await ensure_worker_topics(settings)
    server = MediaServer()
    base = await serve(server.app())
    data = os.urandom(2000)
    sha = server.add("image.bin", data)
    pushes = PushCodec()
    async with SchemaRegistry(registry_settings) as registry:
        await registry.set_compatibility(subject(settings.topics.messages))
        pushes.frame_with(await registry.register(subject(settings.topics.messages), pushes.text))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
        async with producer:
            raw = media_push("image", "m-registry", f"{base}/files/image.bin", sha)
            record = pushes.encode(pushes.parse(raw, RECORD_TIME))
            await producer.send_and_wait(settings.topics.messages, record, timestamp_ms=RECORD_TIME)
        media = MediaSettings(root=tmp_path / "media", allow_hosts=frozenset({"127.0.0.1"}))
        async with started(workers.media(settings, media)) as assembly:
            worker = assembly.workers[0]  # then its re-drive reader
            assert await worker.run(count=1, timeout=60) == 1
        [event] = await read_records(settings.topics.media, 1)
        media_id = await registry.register(subject(settings.topics.media), MediaCodec().text)
        assert await registry.compatibility(subject(settings.topics.media)) == "FULL_TRANSITIVE"
        assert event.value is not None
        assert event.value[:5] == b"\x00" + media_id.to_bytes(4, "big")
        events = MediaCodec()
        events.writers.add(media_id, await registry.schema(media_id))
        decoded = events.decode(event.value)
    assert decoded["messageId"] == "m-registry" and decoded["size"] == len(data)
