"""`uplink archive cat` and `replay` read archive files back; Avro C reads them too."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import uuid
from pathlib import Path

import avro.datafile
import avro.io
import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.archive.files import ArchiveFiles
from consumers.archive.settings import ArchiveSettings
from consumers.archive.stores import ArchiveBucket
from consumers.runtime import Inbound
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader
from uplink.cli.main import main
from uplink.registry.client import SchemaRegistry, SubjectSchemas, subject
from uplink.s3.bucket import Bucket
from uplink.s3.settings import S3Location
from uplink.settings import RegistrySettings

CODEC = PushCodec()
BODIES = [path.read_bytes() for path in sorted(EXAMPLES.glob("*.json"))[:3]]


async def write_archive(root: Path) -> Path:
    """One archive file written by the archive handler itself, from three spec examples."""
    archive = ArchiveFiles(ArchiveSettings(root=root))
    records = []
    for offset, body in enumerate(BODIES):
        push = CODEC.parse(body, 1_700_000_000_000)
        push["timestamp"] = 1_700_000_000  # one event hour: one file
        value = CODEC.encode(push)
        record = ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 1, len(value), [])
        records.append(Inbound(record, CODEC))

    for inbound in records:
        await archive.handle(inbound)
    await archive.flush({records[0].tp: len(records)})
    await archive.stop()
    [path] = root.rglob("*.avro")
    return path


def test_cat_prints_json_lines_and_names_a_corrupt_file(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    good = asyncio.run(write_archive(tmp_path / "archive"))
    corrupt = tmp_path / "corrupt.avro"
    corrupt.write_bytes(good.read_bytes()[:-40])
    assert main(["archive", "cat", str(corrupt), str(good)]) == 1
    out, err = capsysbinary.readouterr()
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["raw"] for line in lines][-3:] == [orjson.loads(body) for body in BODIES]
    assert str(corrupt).encode() in err


def test_avro_c_reads_the_archive(tmp_path: Path) -> None:
    assert shutil.which("avrocat"), "avrocat missing: apt-get install avro-bin"
    good = asyncio.run(write_archive(tmp_path))
    shown = subprocess.run(["avrocat", str(good)], capture_output=True, check=True, timeout=60)
    ids = [orjson.loads(line)["messageId"] for line in shown.stdout.splitlines()]
    assert ids == [orjson.loads(body)["messageId"] for body in BODIES]


@pytest.mark.anyio
async def test_replay_produces_the_archived_records_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    read_records: Reader,
) -> None:
    good = await write_archive(tmp_path)
    topic = f"test.replay.{tmp_path.name}"[:200]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    assert await asyncio.to_thread(main, ["archive", "replay", str(good), "--topic", topic]) == 0
    records = await read_records(topic, 3)
    assert [CODEC.decode(r.value)["raw"] for r in records] == BODIES


async def write_s3_archive(location: S3Location) -> list[str]:
    """Two archive objects (event hours 10 and 11 of 2023-11-14) written by the archive
    handler to a bucket; returns their messageIds in order."""
    archive = ArchiveFiles(ArchiveSettings(root=location), ArchiveBucket(Bucket(location, "test")))
    await archive.start()
    ids = []
    for offset, body in enumerate(BODIES * 2):
        push = CODEC.parse(body, 1_700_000_000_000)
        push["messageId"] = f"{push['messageId']}-{offset}"
        push["timestamp"] = 1_699_956_000 + 3600 * (offset >= len(BODIES))  # 10:00, then 11:00
        ids.append(push["messageId"])
        value = CODEC.encode(push)
        record = ConsumerRecord("t", 0, offset, 0, 0, b"k", value, None, 1, len(value), [])
        pending = await archive.handle(Inbound(record, CODEC))
        if pending is not None:
            await pending.ready
    await archive.flush({TopicPartition("t", 0): 2 * len(BODIES)})
    await archive.stop()
    return ids


def s3_environ(monkeypatch: pytest.MonkeyPatch, location: S3Location) -> None:
    s3 = location.s3
    assert s3.endpoint and s3.access_key_id and s3.secret_access_key
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.reveal())


@pytest.mark.anyio
async def test_cat_reads_s3_by_prefix_and_by_hour_and_apache_avro_reads_the_objects(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    ids = await write_s3_archive(s3)
    s3_environ(monkeypatch, s3)

    assert await asyncio.to_thread(main, ["archive", "cat", str(s3)]) == 0
    out, _ = capsysbinary.readouterr()
    assert [orjson.loads(line)["messageId"] for line in out.splitlines()] == ids

    hour_11 = ["archive", "cat", str(s3), "--from", "2023-11-14T11", "--to", "2023-11-14T11"]
    assert await asyncio.to_thread(main, hour_11) == 0
    out, _ = capsysbinary.readouterr()
    assert [orjson.loads(line)["messageId"] for line in out.splitlines()] == ids[len(BODIES) :]

    # The Apache Avro implementation (PyPI avro) reads each object as it is in the bucket.
    read: list[str] = []
    async with Bucket(s3, "test") as bucket:
        listed = await bucket.listed(s3.key(""))
        assert [item.key.split("/")[-2] for item in listed] == ["hour=10", "hour=11"]
        for item in listed:
            data = await bucket.get(item.key)
            with avro.datafile.DataFileReader(io.BytesIO(data), avro.io.DatumReader()) as reader:
                read.extend(str(record["messageId"]) for record in reader)  # type: ignore[index]
    assert read == ids


@pytest.mark.anyio
async def test_replay_from_s3_produces_an_hour_of_the_archive_again(
    s3: S3Location,
    monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    read_records: Reader,
) -> None:
    ids = await write_s3_archive(s3)
    topic = f"test.replay.s3.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    s3_environ(monkeypatch, s3)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    command = ["archive", "replay", str(s3), "--topic", topic, "--from", "2023-11-14T10"]
    command += ["--to", "2023-11-14"]  # the whole day: both hours
    assert await asyncio.to_thread(main, command) == 0
    records = await read_records(topic, len(ids))
    assert [CODEC.decode(r.value)["messageId"] for r in records] == ids


def test_cat_of_a_missing_bucket_names_it(
    s3: S3Location, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    s3_environ(monkeypatch, s3)
    missing = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/archive"
    assert main(["archive", "cat", missing]) == 78
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.anyio
async def test_replay_with_a_registry_frames_as_the_ingress_does(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kafka_bootstrap: str,
    schema_registry: str,
    read_records: Reader,
) -> None:
    good = await write_archive(tmp_path)
    topic = f"test.replay.registry.{tmp_path.name}"[:200]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("UPLINK_SCHEMA_REGISTRY_URL", schema_registry)
    assert await asyncio.to_thread(main, ["archive", "replay", str(good), "--topic", topic]) == 0
    records = await read_records(topic, 3)
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        schema_id = await registry.register(subject(topic), CODEC.text)  # the one replay used
        reader = PushCodec(lookup=SubjectSchemas(registry, subject(topic)))
        assert await reader.learn([r.value for r in records])
    assert {bytes(r.value[:5]) for r in records if r.value} == {
        b"\x00" + schema_id.to_bytes(4, "big")
    }
    assert [reader.decode(r.value)["raw"] for r in records if r.value] == BODIES
