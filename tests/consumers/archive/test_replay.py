"""`uplink archive cat` and `replay` read archive files back; Avro C reads them too."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from cli.main import main
from consumers.archive.files import ArchiveFiles
from consumers.archive.settings import ArchiveSettings
from consumers.runtime.worker import Inbound
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader
from uplink.registry.client import SchemaRegistry, SubjectSchemas, subject
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
