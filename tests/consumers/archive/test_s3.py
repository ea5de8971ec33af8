"""The archive on a real S3 server (versitygw): exactly once through SIGKILLs and a zombie, two
workers with their own working directories on one bucket, and the store away for 30 s."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import random
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from consumers.archive.files import ArchiveFiles
from consumers.archive.settings import ArchiveSettings
from consumers.runtime.worker import Worker
from tests.conftest import s3_location
from tests.consumers.archive.traffic import (
    CODEC,
    assert_exactly_once,
    produce,
    pushes,
    send,
    worker_env,
)
from tests.consumers.conftest import SettingsFactory
from tests.consumers.crashes import (
    committed_past,
    committed_total,
    kill_at_random_moments,
    run_to_the_end,
)
from tests.servers.s3 import LocalS3, S3ServerSettings
from uplink.broker import free_port
from uplink.cli.main import main
from uplink.cli.workers import archive_store
from uplink.s3.bucket import Bucket
from uplink.s3.settings import S3Location
from uplink.settings import KafkaSettings, Topics
from uplink.topics import ensure_topics

pytestmark = [pytest.mark.anyio]


def s3_env(location: S3Location) -> dict[str, str]:
    s3 = location.s3
    assert s3.endpoint and s3.access_key_id and s3.secret_access_key
    return {
        "AWS_ENDPOINT_URL": s3.endpoint,
        "AWS_REGION": s3.region,
        "AWS_ACCESS_KEY_ID": s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": s3.secret_access_key.reveal(),
    }


async def archived(location: S3Location) -> list[dict[str, Any]]:
    """Every record in the bucket's archive objects, read back with fastavro."""
    records: list[dict[str, Any]] = []
    async with Bucket(location, "test") as bucket:
        for item in await bucket.listed(location.key("")):
            if "/.uplink/" in item.key:
                continue  # a start-up's create-only probe a kill left behind
            assert item.key.endswith(".avro"), f"not an archive file: {item.key}"
            data = await bucket.get(item.key)
            records.extend(fastavro.reader(io.BytesIO(data)))  # type: ignore[arg-type]
    return records


async def group_members(admin: AIOKafkaAdminClient, group: str) -> tuple[str, int]:
    """The group's state and how many members it has, as its coordinator says."""
    [response] = await admin.describe_consumer_groups([group])
    _error, _id, state, _protocol_type, _protocol, members, *_ = response.groups[0]
    return state, len(members)


async def until_members(admin: AIOKafkaAdminClient, group: str, count: int) -> None:
    """Poll (the broker has no push for this) until the group is stable with ``count``."""
    while await group_members(admin, group) != ("Stable", count):  # noqa: ASYNC110
        await asyncio.sleep(0.1)


def archive_command(location: S3Location, work_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "uplink.cli.main", "--log-level", "INFO", "archive",
        "--archive-dir", str(location), "--work-dir", str(work_dir),
        "--max-records", "200", "--flush-interval", "0.3",
    ]  # fmt: skip


@pytest.mark.slow
async def test_sigkills_and_a_zombie_lose_and_duplicate_nothing(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics, s3: S3Location
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    group = f"archive-s3-{uuid.uuid4().hex[:8]}"
    await ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), topics)
    made, sent = pushes(rng, unique=19_600, retried=400)
    total, early = 20_000, 16_000  # the last 4,000 come as steady traffic during the zombie
    await send(kafka_bootstrap, topics.messages, made[:early])

    env = worker_env(kafka_bootstrap, topics, group, **s3_env(s3))
    log = (tmp_path / "worker.log").open("wb")
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    started: list[asyncio.subprocess.Process] = []

    async def spawn(name: str) -> asyncio.subprocess.Process:
        command = archive_command(s3, tmp_path / f"work-{name}")
        process = await asyncio.create_subprocess_exec(*command, env=env, stderr=log)
        started.append(process)
        return process

    try:
        kills = await kill_at_random_moments(
            archive_command(s3, tmp_path / "work-killed"), env, log, admin, group,
            total=early, kills=10, rng=rng, max_delay=0.05,
        )  # fmt: skip
        assert kills == 10, f"only {kills} kills before the end (seed {seed})"

        # The zombie: two members share the partitions; one is paused (SIGSTOP) past its
        # session, the group gives its partitions to the other, which archives on; then it
        # wakes up (SIGCONT) with open files of offsets the other has archived since.
        traffic = asyncio.create_task(
            send(kafka_bootstrap, topics.messages, made[early:], per_second=120)
        )
        mark = await committed_total(admin, group)
        zombie = await spawn("zombie")
        await spawn("other")
        async with asyncio.timeout(90):
            await until_members(admin, group, 2)
            mark = await committed_past(admin, group, mark)
            await asyncio.sleep(rng.uniform(0, 0.3))  # mid-file
            assert not traffic.done(), "the traffic ended before the zombie paused"
            zombie.send_signal(signal.SIGSTOP)
            await until_members(admin, group, 1)  # its session expired: rebalanced
            await committed_past(admin, group, await committed_total(admin, group))
            zombie.send_signal(signal.SIGCONT)
            # It finds out it was fenced: it leaves (its commit is refused) or rejoins.
            exited = asyncio.ensure_future(zombie.wait())
            joined = asyncio.ensure_future(until_members(admin, group, 2))
            await asyncio.wait([exited, joined], return_when=asyncio.FIRST_COMPLETED)
            for waiting in (exited, joined):
                waiting.cancel()
            await traffic

        await run_to_the_end(
            archive_command(s3, tmp_path / "work-last"), env, log, admin, group, total=total
        )
    finally:
        for process in started:
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                await process.wait()
        await admin.close()
        log.close()

    assert_exactly_once(await archived(s3), sent, seed)


async def test_two_workers_with_their_own_work_dirs_share_one_bucket_exactly_once(
    tmp_path: Path, make_worker_settings: SettingsFactory, s3: S3Location
) -> None:
    settings = make_worker_settings(
        "archive", commit_every=1_000_000, commit_interval=0.2, session_timeout=6
    )
    settings = dataclasses.replace(
        settings, topics=dataclasses.replace(settings.topics, messages_partitions=4)
    )
    await ensure_topics(settings.kafka, settings.topics)
    rng = random.Random(7)
    sent = await produce(
        settings.kafka.bootstrap_servers, settings.topics.messages, rng, unique=3000, retried=60
    )

    def worker(name: str) -> tuple[Worker, ArchiveFiles]:
        archive = ArchiveSettings(root=s3, max_records=100, work_dir=tmp_path / name)
        files = ArchiveFiles(archive, archive_store(archive))
        return Worker(settings, files, CODEC), files

    (first, first_files), (second, second_files) = worker("a"), worker("b")
    async with first_files, first:
        assert await first.run(count=600, timeout=60) == 600  # alone, then a member joins
        async with second_files, second:
            tasks = [asyncio.create_task(w.run(timeout=60)) for w in (first, second)]
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
            await admin.start()
            try:
                async with asyncio.timeout(60):
                    await committed_past(admin, settings.group, 3059)
            finally:
                await admin.close()
            for w in (first, second):
                w.request_stop()
            await asyncio.gather(*tasks)
        assert sum(second.metrics.processed.values()) > 0, "the second worker got no partition"
    assert not list(tmp_path.rglob("*.tmp")), "spool files left behind"
    assert_exactly_once(await archived(s3), sent, 7)


@pytest.mark.slow
@pytest.mark.s3  # a server of its own, not the session's: marked by hand
async def test_the_store_away_for_30_s_loses_and_duplicates_nothing(
    tmp_path: Path, kafka_bootstrap: str, topics: Topics
) -> None:
    # A server of its own: the session's serves the other tests meanwhile.
    server = LocalS3(S3ServerSettings(data_dir=tmp_path / "s3", port=free_port()))
    server.start()
    try:
        location = s3_location(server)
        rng = random.Random(11)
        group = f"archive-s3-away-{uuid.uuid4().hex[:8]}"
        await ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), topics)
        sent = await produce(kafka_bootstrap, topics.messages, rng, unique=4000, retried=80)
        total = 4080
        env = worker_env(kafka_bootstrap, topics, group, **s3_env(location))
        port = free_port()
        log = (tmp_path / "worker.log").open("wb")
        process = await asyncio.create_subprocess_exec(
            *archive_command(location, tmp_path / "work"),
            env={**env, "UPLINK_METRICS_PORT": str(port), "UPLINK_MAX_BATCH": "20"},
            stderr=log,
        )
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            async with asyncio.timeout(60):
                before = await committed_past(admin, group, 0)
            server.stop()
            await asyncio.sleep(30)  # the outage itself, not a wait for an event
            assert process.returncode is None, "the worker exited while the store was away"
            during = await committed_total(admin, group)
            assert during < total, "everything was committed before the store went away"
            server.start()
            async with asyncio.timeout(90):  # it recovers by itself; the lag drains
                await committed_past(admin, group, total - 1)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await admin.close()
            log.close()
        warnings = (tmp_path / "worker.log").read_text()
        assert "retrying in" in warnings, "the worker never noticed the store was away"
        assert before <= during
        assert_exactly_once(await archived(location), sent, 11)
    finally:
        server.stop()


@pytest.mark.parametrize("fault", ["missing bucket", "wrong secret"])
def test_the_worker_stops_at_start_up_naming_the_setting(
    fault: str,
    kafka_bootstrap: str,
    topics: Topics,
    s3: S3Location,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in worker_env(kafka_bootstrap, topics, f"g-{uuid.uuid4().hex[:8]}").items():
        monkeypatch.setenv(name, value)
    for name, value in s3_env(s3).items():
        monkeypatch.setenv(name, value)
    url = str(s3)
    if fault == "missing bucket":
        url = f"s3://missing-{uuid.uuid4().hex[:8]}/archive"
    else:
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")
    monkeypatch.setenv("UPLINK_ARCHIVE_DIR", url)
    assert main(["archive"]) == 78
    err = capsys.readouterr().err
    if fault == "missing bucket":
        assert "UPLINK_ARCHIVE_DIR" in err and "does not exist" in err
    else:
        assert "AWS_SECRET_ACCESS_KEY" in err and "refused these credentials" in err
        assert "not-the-secret-at-all" not in err
