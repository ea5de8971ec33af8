"""The archive worker on a real broker: each unique push once, by event hour, exactly-once files."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fastavro
import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from consumers.archive.files import (
    ArchiveFiles,
    PublishedSummary,
    _Writer,
    event_hour,
    hour_start,
)
from consumers.archive.settings import ArchiveSettings
from consumers.runtime import Inbound, Positions, Rewind, Worker
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader
from tests.consumers.conftest import SettingsFactory
from tests.consumers.crashes import committed
from uplink.exceptions import ConfigError
from uplink.s3.bucket import Bucket
from uplink.settings import WorkerSettings
from uplink.topics import ensure_topics

pytestmark = pytest.mark.anyio

CODEC = PushCodec()
TEMPLATE = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
HOUR_10 = 1_700_042_400  # 2023-11-15 10:00:00 UTC, seconds: the pushes' event time
# Record time stays recent, or the broker's 7-day retention deletes the test's data.
RECORD_TIME = time.time_ns() // 1_000_000 - 4 * 3_600_000  # and never more than 1 h ahead
Publish = Callable[[str, int], Awaitable[bytes]]


class SimulatedCrash(Exception):
    """The process dies between a file's rename and the commit of its offsets."""


class Unhurried(ArchiveFiles):
    """3 ms per push, so the stream is still flowing when the second member joins."""

    async def handle(self, inbound: Inbound) -> Positions | None:
        await asyncio.sleep(0.003)
        return await super().handle(inbound)


class CrashAfterRename(ArchiveFiles):
    async def flush(self, handled: Positions) -> Positions:
        await super().flush(handled)
        raise SimulatedCrash


@pytest.fixture
def worker_settings(make_worker_settings: SettingsFactory) -> WorkerSettings:
    # Only rotations and stop() commit here.
    return make_worker_settings("archive", commit_every=1_000_000, commit_interval=3600)


@pytest.fixture
def publish(worker_settings: WorkerSettings, producer: AIOKafkaProducer) -> Publish:
    async def send(message_id: str, event_seconds: int) -> bytes:
        raw = orjson.dumps({**TEMPLATE, "messageId": message_id, "timestamp": event_seconds})
        await producer.send_and_wait(
            worker_settings.topics.messages,
            CODEC.encode(CODEC.parse(raw, event_seconds * 1000)),
            key=b"conversation",
            timestamp_ms=RECORD_TIME + (event_seconds - HOUR_10) * 1000,
        )
        return raw

    return send


def seen_by(*workers: Worker) -> int:
    """Records the workers handled or skipped as duplicates, so far."""
    return sum(
        sum(w.metrics.processed.values()) + sum(w.metrics.duplicates.values()) for w in workers
    )


def archived(root: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """The archive's files and records; no temporary file may be left behind."""
    assert not list(root.rglob("*.tmp"))
    files = sorted(root.rglob("*.avro"))
    records = []
    for path in files:
        with path.open("rb") as stream:
            records.extend(fastavro.reader(stream))  # type: ignore[arg-type]
    return files, records


async def test_each_unique_push_is_archived_once_by_event_hour(
    tmp_path: Path, worker_settings: WorkerSettings, publish: Publish
) -> None:
    sent = {}
    for n in range(6):
        sent[f"m{n}"] = await publish(f"m{n}", HOUR_10 + n * 60)
    await publish("m2", HOUR_10 + 7 * 60)  # the provider's retry: skipped
    for n in range(6, 9):  # the next event hour: a new file
        sent[f"m{n}"] = await publish(f"m{n}", HOUR_10 + 3600 + n)

    archive = ArchiveFiles(ArchiveSettings(root=tmp_path, max_records=4))
    async with Worker(worker_settings, archive, CODEC) as worker:
        assert await worker.run(count=10, timeout=60) == 10

    topic = worker_settings.topics.messages
    files, records = archived(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        f"{topic}/dt=2023-11-15/hour=10/{topic}+0+0.avro",  # m0..m3: full at 4 records
        f"{topic}/dt=2023-11-15/hour=10/{topic}+0+4.avro",  # m4, m5 (m2's retry skipped)
        f"{topic}/dt=2023-11-15/hour=11/{topic}+0+7.avro",  # m6..m8
    ]
    assert [r["messageId"] for r in records] == [f"m{n}" for n in range(9)]
    assert {r["messageId"]: r["raw"] for r in records} == sent  # byte-identical


async def test_a_crash_between_publish_and_commit_resumes_after_the_published_file(
    tmp_path: Path, worker_settings: WorkerSettings, publish: Publish
) -> None:
    for n in range(5):
        await publish(f"m{n}", HOUR_10 + n)

    crashing = Worker(worker_settings, CrashAfterRename(ArchiveSettings(root=tmp_path)), CODEC)
    await crashing.start()
    assert await crashing.run(count=5, timeout=60) == 5
    with pytest.raises(SimulatedCrash):
        await crashing.stop()  # renames m0..m4 into place, then "dies" before the commit
    files, _ = archived(tmp_path)
    assert len(files) == 1

    for n in range(5, 8):
        await publish(f"m{n}", HOUR_10 + n)
    # Nothing was committed: all again. Flushed often, so the file it publishes first ends
    # at another offset than the one there, and the rewind happens mid-run.
    settings = dataclasses.replace(worker_settings, commit_interval=0.2)
    async with Worker(settings, ArchiveFiles(ArchiveSettings(root=tmp_path)), CODEC) as w:
        async with asyncio.timeout(60):
            while await committed(settings) < 8:
                await w.run(timeout=0.5)

    files_after, records = archived(tmp_path)
    # The re-run's first file (m0..m7) found its key taken: it read the end of the file there
    # (offset 5), dropped its own and archived from 5 on. Nothing was overwritten.
    topic = worker_settings.topics.messages
    assert [f.name for f in files_after] == [f"{topic}+0+0.avro", f"{topic}+0+5.avro"]
    assert files_after[0] == files[0]
    assert await committed(worker_settings) == 8
    counts = Counter(r["messageId"] for r in records)
    assert counts == Counter(f"m{n}" for n in range(8))  # each exactly once


async def test_a_failed_rename_stops_the_worker_and_nothing_past_the_last_file_is_committed(
    tmp_path: Path, worker_settings: WorkerSettings, publish: Publish
) -> None:
    sent = {f"m{n}": await publish(f"m{n}", HOUR_10 + n) for n in range(9)}
    topic = worker_settings.topics.messages
    # The second file's name is taken by a directory: its rename (in the background) fails.
    hour = tmp_path / topic / "dt=2023-11-15" / "hour=10"
    obstacle = hour / f"{topic}+0+3.avro"
    (obstacle / "in-the-way").mkdir(parents=True)

    with pytest.raises(IsADirectoryError):
        archive = ArchiveFiles(ArchiveSettings(root=tmp_path, max_records=3))
        async with Worker(worker_settings, archive, CODEC) as worker:
            await worker.run(count=9, timeout=60)
    await archive.stop()
    assert await committed(worker_settings) == 3  # the first file's records, not one more
    assert sorted(p.name for p in hour.glob("*.avro")) == [f"{topic}+0+0.avro", obstacle.name]

    (obstacle / "in-the-way").rmdir()
    obstacle.rmdir()
    archive = ArchiveFiles(ArchiveSettings(root=tmp_path, max_records=3))
    async with Worker(worker_settings, archive, CODEC) as worker:
        assert await worker.run(count=6, timeout=60) == 6  # from the committed position
    await archive.stop()
    files, records = archived(tmp_path)  # the failed file's spool removed by its writer
    assert [f.name for f in files] == [f"{topic}+0+{first}.avro" for first in (0, 3, 6)]
    assert {r["messageId"]: r["raw"] for r in records} == sent
    assert len(records) == len(sent)


async def test_two_workers_with_a_rebalance_in_the_middle_archive_each_push_once(
    tmp_path: Path, worker_settings: WorkerSettings
) -> None:
    settings = dataclasses.replace(
        worker_settings,
        topics=dataclasses.replace(worker_settings.topics, messages_partitions=4),
        commit_interval=0.2,  # rename and commit often, so the rebalance lands between files
        session_timeout=6,
    )
    await ensure_topics(settings.kafka, settings.topics)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    sent = {}
    try:
        for n in range(2000):
            raw = orjson.dumps({**TEMPLATE, "messageId": f"r{n}", "timestamp": HOUR_10 + n})
            sent[f"r{n}"] = raw
            await producer.send(
                settings.topics.messages,
                CODEC.encode(CODEC.parse(raw, 0)),
                key=f"conversation-{n % 40}".encode(),
                timestamp_ms=RECORD_TIME + n,
            )
        await producer.flush()
    finally:
        await producer.stop()

    first = Worker(settings, Unhurried(ArchiveSettings(root=tmp_path, max_records=50)), CODEC)
    second = Worker(settings, Unhurried(ArchiveSettings(root=tmp_path, max_records=50)), CODEC)
    async with first:
        assert await first.run(count=500, timeout=60) == 500  # alone, then a member joins
        async with second:
            # Both run until the group has committed everything; the join revokes partitions
            # from the first worker mid-stream (flush + commit), then both share the topic.
            tasks = [asyncio.create_task(w.run(timeout=60)) for w in (first, second)]
            async with asyncio.timeout(60):
                while seen_by(first, second) < 2000:  # noqa: ASYNC110 - counters, polled
                    await asyncio.sleep(0.1)
            for worker in (first, second):
                worker.request_stop()
            await asyncio.gather(*tasks)
        assert sum(second.metrics.processed.values()) > 0, "the second worker got no partition"

    _, records = archived(tmp_path)
    counts = Counter(r["messageId"] for r in records)
    assert counts == Counter(sent.keys()), "each push exactly once across both workers"
    assert all(r["raw"] == sent[r["messageId"]] for r in records)


async def test_temporary_files_a_killed_worker_left_are_removed(
    tmp_path: Path, worker_settings: WorkerSettings, publish: Publish
) -> None:
    topic = worker_settings.topics.messages
    stale = tmp_path / topic / "dt=2023-11-15" / "hour=10" / f"{topic}+0+12345.avro.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    other = stale.with_name(f"{topic}+1+7.avro.tmp")  # another partition's: not ours to touch
    other.write_bytes(b"")
    named = stale.with_name(f"{topic}+0+12399.avro.0123456789ab.tmp")  # as spools are named
    named.write_bytes(b"")
    await publish("m0", HOUR_10)
    async with Worker(
        worker_settings, ArchiveFiles(ArchiveSettings(root=tmp_path)), CODEC
    ) as worker:
        assert await worker.run(count=1, timeout=60) == 1
    assert not stale.exists()
    assert not named.exists()
    assert other.exists()


async def test_with_verify_a_datum_corrupt_past_its_head_goes_to_the_dlq(
    tmp_path: Path,
    worker_settings: WorkerSettings,
    publish: Publish,
    producer: AIOKafkaProducer,
    read_records: Reader,
) -> None:
    good = CODEC.encode(CODEC.parse(orjson.dumps({**TEMPLATE, "messageId": "m-bad"}), 0))
    corrupt = good[:-3]  # framing and head intact, the datum cut short
    await producer.send_and_wait(
        worker_settings.topics.messages, corrupt, key=b"k", timestamp_ms=RECORD_TIME
    )
    raw = await publish("m-good", HOUR_10)
    files = ArchiveFiles(ArchiveSettings(root=tmp_path, verify=True))
    async with Worker(worker_settings, files, CODEC) as worker:
        assert await worker.run(count=2, timeout=60) == 2
    await files.stop()
    [dead] = await read_records(worker_settings.dlq, 1)
    assert dead.value == corrupt
    assert dict(dead.headers)["uplink-dlq-reason"].startswith(b"undecodable")
    _, records = archived(tmp_path)  # the file stays readable
    assert [record["raw"] for record in records] == [raw]


def test_an_event_time_no_date_can_name_falls_back_to_when_it_was_received() -> None:
    def inbound(timestamp: int) -> Inbound:
        record = CODEC.parse(orjson.dumps({**TEMPLATE, "timestamp": timestamp}), 1_700_000_000_000)
        value = CODEC.encode(record)
        return Inbound(ConsumerRecord("t", 0, 0, 0, 0, b"", value, None, 0, len(value), []), CODEC)

    received_hour = 1_700_000_000 // 3600
    assert event_hour(inbound(HOUR_10)) == HOUR_10 // 3600
    assert event_hour(inbound(2**62)) == received_hour  # past year 9999
    assert event_hour(inbound(-(2**40))) == received_hour  # before year 1
    assert hour_start(HOUR_10 // 3600).isoformat() == "2023-11-15T10:00:00+00:00"


def test_an_unknown_codec_stops_start_up_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--codec: unknown Avro codec 'snappy'"):
        ArchiveSettings(root=tmp_path, codec="snappy")


async def test_records_wait_while_the_writer_thread_is_behind() -> None:
    writer = _Writer(max_backlog=2)
    release = threading.Event()
    try:
        jobs = [writer.submit(release.wait) for _ in range(3)]
        assert writer.behind()  # 3 jobs queued, 2 allowed
        catching_up = asyncio.create_task(writer.catch_up())
        await asyncio.sleep(0.05)
        assert not catching_up.done()
        release.set()
        async with asyncio.timeout(10):
            await catching_up
        assert not writer.behind()
        assert jobs[0].done()
    finally:
        release.set()
        writer.shutdown()


def inbounds(count: int, topic: str = "t") -> list[Inbound]:
    """Records 0..count-1 of partition 0, one event hour."""
    made = []
    for offset in range(count):
        raw = orjson.dumps({**TEMPLATE, "messageId": f"z{offset}", "timestamp": HOUR_10})
        value = CODEC.encode(CODEC.parse(raw, HOUR_10 * 1000))
        made.append(
            Inbound(
                ConsumerRecord(topic, 0, offset, 0, 0, b"k", value, None, 1, len(value), []), CODEC
            )
        )
    return made


@pytest.mark.parametrize("where", ["directory", pytest.param("s3", marks=pytest.mark.s3)])
@pytest.mark.parametrize("first", ["owner", "zombie"])
async def test_a_zombie_never_overwrites_and_the_loser_resumes_after_the_winner(
    tmp_path: Path, where: str, first: str, request: pytest.FixtureRequest
) -> None:
    # Two writers of one partition from the same committed position (0), cut at other offsets:
    # a zombie (paused past its session, mid-file) and the partition's new owner.
    if where == "s3":
        root: Any = request.getfixturevalue("s3")
    else:
        root = tmp_path / "shared"
    records = inbounds(8)
    tp = records[0].tp
    zombie_end, owner_end = (8, 5) if first == "zombie" else (5, 8)

    async def writer(name: str) -> ArchiveFiles:
        from uplink.cli.workers import archive_store

        settings = ArchiveSettings(root=root, work_dir=tmp_path / name)
        files = ArchiveFiles(settings, archive_store(settings))
        await files.start()
        return files

    zombie, owner = await writer("zombie"), await writer("owner")
    try:
        for inbound in records[:zombie_end]:
            await zombie.handle(inbound)  # then it pauses
        if first == "zombie":  # it wakes up and publishes before the owner's first file
            assert await zombie.flush({tp: zombie_end}) == {tp: zombie_end}
        for inbound in records[:owner_end]:
            await owner.handle(inbound)
        if first == "zombie":
            # The key is taken: nothing overwritten, resume after the winner's range.
            assert await owner.flush({tp: owner_end}) == Rewind({tp: zombie_end}, {})
            winner = zombie_end
        else:
            assert await owner.flush({tp: owner_end}) == {tp: owner_end}
            # The zombie wakes up: its key is taken (S3), or its spool was removed by the
            # owner's sweep (a shared directory): either way it publishes nothing.
            try:
                lost = await zombie.flush({tp: zombie_end})
            except FileNotFoundError:
                pass
            else:
                assert lost == Rewind({tp: owner_end}, {})
            winner = owner_end
    finally:
        await owner.stop()
        await zombie.stop()

    if where == "s3":
        async with Bucket(root, "test") as bucket:
            [item] = await bucket.listed(root.key(""))
            data = await bucket.get(item.key)
    else:
        [path] = root.rglob("*.avro")
        data = path.read_bytes()
        assert not list(root.rglob("*.tmp"))
    kept = list(fastavro.reader(io.BytesIO(data)))  # type: ignore[arg-type]
    assert [r["messageId"] for r in kept] == [f"z{n}" for n in range(winner)]  # the winner's
    assert fastavro.reader(io.BytesIO(data)).metadata["uplink.end"] == f"{winner:020d}"


def test_files_published_are_summed_up_once_a_minute_at_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    summary = PublishedSummary(every=60.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="consumers.archive.files"):
        for second in range(0, 150, 5):  # a file every 5 s for 150 s
            now[0] = float(second)
            summary.add(100)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "archived 1300 records in 13 files in the last 60s",
        "archived 1200 records in 12 files in the last 60s",
    ]
