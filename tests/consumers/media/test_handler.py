"""The media worker on a real broker, fetching from real HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from consumers.media.handler import MediaHandler
from consumers.media.settings import MediaRetries, MediaSettings, MediaTimeouts
from consumers.runtime import HandlerFailed, Worker
from schemas import MediaCodec, PushCodec
from tests.conftest import EXAMPLES, Reader, Server
from tests.consumers.conftest import SettingsFactory
from tests.consumers.crashes import committed
from tests.consumers.media.server import MediaServer, b64sha256
from uplink.cli import workers
from uplink.cli.launcher import started
from uplink.s3.bucket import Bucket
from uplink.s3.settings import S3Location
from uplink.settings import WorkerSettings

pytestmark = pytest.mark.anyio

CODEC = PushCodec()
EVENTS = MediaCodec()
KINDS = ("image", "video", "audio", "document", "sticker")
RECORD_TIME = time.time_ns() // 1_000_000 - 3_600_000  # recent, or retention deletes it

Publish = Callable[..., Awaitable[None]]


def media_push(kind: str, message_id: str, url: str, sha256: str) -> bytes:
    """The spec's example of ``kind`` with its media pointing at the test server."""
    body = copy.deepcopy(orjson.loads(EXAMPLES.joinpath(f"{kind}.json").read_bytes()))
    body["messageId"] = message_id
    body["message"][kind].update({"filePath": url, "sha256": sha256})
    return orjson.dumps(body)


@pytest.fixture
def worker_settings(make_worker_settings: SettingsFactory) -> WorkerSettings:
    return make_worker_settings("media", commit_interval=0.2)


@pytest.fixture
def media_settings(tmp_path: Path) -> MediaSettings:
    return MediaSettings(
        root=tmp_path / "media",
        allow_hosts=frozenset({"127.0.0.1"}),
        timeouts=MediaTimeouts(connect=2, read=0.3, attempt=20),
        retries=MediaRetries(attempts=4, backoff=0.01, backoff_max=0.05, retry_after_max=5),
    )


@pytest.fixture
def publish(worker_settings: WorkerSettings, producer: AIOKafkaProducer) -> Publish:
    async def send(raw: bytes, key: bytes = b"639518159038:91856321412") -> None:
        await producer.send_and_wait(
            worker_settings.topics.messages,
            CODEC.encode(CODEC.parse(raw, RECORD_TIME)),
            key=key,
            timestamp_ms=RECORD_TIME,
        )

    return send


@contextlib.asynccontextmanager
async def media_worker(
    settings: WorkerSettings, media: MediaSettings
) -> AsyncIterator[tuple[Worker, MediaHandler]]:
    """Wired and started as ``uplink media`` does; drains in-flight work before the final
    commit (for up to ``media.drain_timeout``) as it stops."""
    async with started(workers.media(settings, media)) as assembly:
        worker = assembly.workers[0]  # then its re-drive reader
        assert isinstance(worker.handler, MediaHandler)
        yield worker, worker.handler


def stored(media: MediaSettings, data: bytes) -> tuple[Path, dict[str, Any]]:
    digest = hashlib.sha256(data).hexdigest()
    path = media.root / "sha256" / digest[:2] / digest
    return path, orjson.loads(path.with_name(digest + ".json").read_bytes())


async def test_every_media_type_is_fetched_verified_stored_and_announced(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    blobs = {kind: os.urandom(1000 + n) for n, kind in enumerate(KINDS)}
    for kind in KINDS:
        sha = server.add(f"{kind}.bin", blobs[kind])
        await publish(media_push(kind, f"m-{kind}", f"{base}/files/{kind}.bin", sha))
    await publish(EXAMPLES.joinpath("text.json").read_bytes())  # not media: nothing to do

    async with media_worker(worker_settings, media_settings) as (worker, handler):
        assert await worker.run(count=6, timeout=60) == 6
    assert handler.metrics.outcomes == {"fetched": 5}
    assert handler.metrics.bytes == sum(map(len, blobs.values()))
    rendered = worker.metrics.render().decode()
    assert 'uplink_media_records_total{outcome="fetched"} 5.0' in rendered
    assert "uplink_media_download_seconds_count 5.0" in rendered

    records = await read_records(worker_settings.topics.media, count=5)
    events = {event["type"]: event for event in map(EVENTS.decode, [r.value for r in records])}
    assert set(events) == set(KINDS)
    assert {r.key for r in records} == {b"639518159038:91856321412"}  # keyed like the source
    for kind in KINDS:
        example = orjson.loads(EXAMPLES.joinpath(f"{kind}.json").read_bytes())["message"][kind]
        path, sidecar = stored(media_settings, blobs[kind])
        assert path.read_bytes() == blobs[kind]
        event = events[kind]
        assert event == {
            "messageId": f"m-{kind}",
            "mediaId": example["id"],
            "type": kind,
            "sha256": hashlib.sha256(blobs[kind]).hexdigest(),
            "size": len(blobs[kind]),
            "mimeType": example["mimeType"],
            "filename": example.get("filename"),
            "uri": path.absolute().as_uri(),
            "fetchedAt": event["fetchedAt"],
        }
        assert abs(event["fetchedAt"] - time.time() * 1000) < 120_000
        assert sidecar["messageId"] == f"m-{kind}"
        assert sidecar["mediaId"] == example["id"]
        assert sidecar["mimeType"] == example["mimeType"]
        assert sidecar["caption"] == example.get("caption")
        assert sidecar["filename"] == example.get("filename")
    assert server.count() == {f"/files/{kind}.bin": 1 for kind in KINDS}
    assert not list((media_settings.root / "tmp").iterdir())  # no spool file left
    assert await read_records(worker_settings.dlq) == []
    assert await committed(worker_settings) == 6


async def test_transient_failures_are_retried_until_the_media_is_kept(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    for n, route in enumerate(["slow", "flaky", "busy"]):  # timeout, 500s, 429 + Retry-After
        sha = server.add(f"{n}.bin", os.urandom(5000))
        await publish(media_push("image", f"m{n}", f"{base}/{route}/{n}.bin", sha))

    async with media_worker(worker_settings, media_settings) as (worker, _):
        await worker.run(count=3, timeout=60)

    records = await read_records(worker_settings.topics.media, count=3)
    assert sorted(EVENTS.decode(r.value)["messageId"] for r in records) == ["m0", "m1", "m2"]
    assert server.count() == {"/slow/0.bin": 2, "/flaky/1.bin": 3, "/busy/2.bin": 2}
    busy = [hit.at for hit in server.hits if hit.path == "/busy/2.bin"]
    assert busy[1] - busy[0] >= 1.0  # Retry-After: 1, though the backoff is at most 0.05 s
    assert await read_records(worker_settings.dlq) == []
    assert await committed(worker_settings) == 3


async def test_permanent_failures_go_to_the_dlq_with_the_reason_and_the_rest_goes_on(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    good = server.add("good.bin", os.urandom(3000))
    port = base.rsplit(":", 1)[1]
    bad = {
        "wrong-sha": (f"{base}/files/good.bin", b64sha256(b"something else")),
        "not-found": (f"{base}/files/missing.bin", good),
        "oversize": (f"{base}/stream/20000", good),
        "private": (f"http://localhost:{port}/files/good.bin", good),
        "redirect-private": (f"{base}/redirect-to?url=http://10.0.0.1/x", good),
        "relative": ("media/good.bin", good),  # and no base URL configured
        "no-sha": (f"{base}/files/good.bin", "sha256"),  # the spec example's placeholder
    }
    for message_id, (url, sha) in bad.items():
        await publish(media_push("document", message_id, url, sha))
    await publish(media_push("image", "fine", f"{base}/files/good.bin", good))

    media = dataclasses.replace(
        media_settings, max_bytes=10_000, retries=MediaRetries(backoff=0.01, hash_attempts=2)
    )
    async with media_worker(worker_settings, media) as (worker, handler):
        await worker.run(count=len(bad) + 1, timeout=60)
    # The ones refused before a download started are dead-lettered by the runtime itself.
    assert handler.metrics.outcomes == {"fetched": 1, "dead_lettered": 5}
    assert sum(worker.metrics.dead_lettered.values()) == len(bad)

    dead = await read_records(worker_settings.dlq, count=len(bad))
    reasons = {
        CODEC.decode(r.value)["messageId"]: dict(r.headers)["uplink-dlq-reason"].decode()
        for r in dead
    }
    assert set(reasons) == set(bad)
    assert "sha256 mismatch" in reasons["wrong-sha"]
    assert "HTTP 404" in reasons["not-found"]
    assert "oversize" in reasons["oversize"]
    assert "refused localhost" in reasons["private"]
    assert "refused 10.0.0.1" in reasons["redirect-private"]
    assert "UPLINK_MEDIA_BASE_URL" in reasons["relative"]
    assert "not hex or base64 of 32 bytes" in reasons["no-sha"]
    assert all(dict(r.headers)["uplink-dlq-worker"] == b"media" for r in dead)
    records = await read_records(worker_settings.topics.media)
    assert [EVENTS.decode(r.value)["messageId"] for r in records] == ["fine"]
    assert server.count("/files/good.bin") == {"/files/good.bin": 3}  # 2 mismatches + fine
    assert await committed(worker_settings) == len(bad) + 1


async def test_duplicates_and_a_rerun_fetch_nothing_twice(
    serve: Server,
    make_worker_settings: SettingsFactory,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    one = server.add("one.bin", os.urandom(4000))
    two = server.add("two.bin", os.urandom(4000))
    await publish(media_push("image", "a", f"{base}/files/one.bin", one))
    await publish(media_push("image", "a", f"{base}/files/one.bin", one))  # provider's retry
    await publish(media_push("sticker", "b", f"{base}/files/one.bin", one))  # same object
    await publish(media_push("audio", "c", f"{base}/files/two.bin", two))

    async with media_worker(worker_settings, media_settings) as (worker, handler):
        await worker.run(count=4, timeout=60)
    assert server.count() == {"/files/one.bin": 1, "/files/two.bin": 1}
    assert handler.metrics.outcomes == {"fetched": 2, "already_stored": 1}
    first = await read_records(worker_settings.topics.media, count=3)
    assert sorted(EVENTS.decode(r.value)["messageId"] for r in first) == ["a", "b", "c"]
    _, sidecar = stored(media_settings, server.files["one.bin"])
    assert sidecar["messageId"] == "a"  # the first push's, kept

    # A re-run from the start (a new group): everything announced again, nothing fetched.
    rerun = dataclasses.replace(worker_settings, group_id=f"media-{uuid.uuid4().hex[:8]}")
    async with media_worker(rerun, media_settings) as (worker, _):
        await worker.run(count=4, timeout=60)
    assert server.count() == {"/files/one.bin": 1, "/files/two.bin": 1}
    again = await read_records(worker_settings.topics.media, count=6)
    assert sorted(EVENTS.decode(r.value)["messageId"] for r in again[3:]) == ["a", "b", "c"]


async def publish_fast(publish: Publish, fast: MediaServer, base: str) -> list[str]:
    """16 image pushes for ``fast`` (the records a slow or failing host must not hold up);
    returns their messageIds, sorted."""
    for n in range(16):
        sha = fast.add(f"{n}.bin", os.urandom(2000))
        await publish(media_push("image", f"fast{n}", f"{base}/files/{n}.bin", sha))
    return sorted(f"fast{n}" for n in range(16))


async def test_a_slow_host_does_not_delay_a_fast_host_and_commits_stay_in_order(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    slow, fast = MediaServer(), MediaServer()
    slow_base, fast_base = await serve(slow.app()), await serve(fast.app())
    for n in range(4):  # offsets 0..3 wait on the slow host until the test opens its gate
        sha = slow.add(f"{n}.bin", os.urandom(2000))
        await publish(media_push("video", f"slow{n}", f"{slow_base}/gated/{n}.bin", sha))
    fast_ids = await publish_fast(publish, fast, fast_base)  # offsets 4..19

    media = dataclasses.replace(
        media_settings,
        per_host=2,
        timeouts=MediaTimeouts(connect=2, read=60, attempt=60),
    )
    tp = TopicPartition(worker_settings.topics.messages, 0)
    async with media_worker(worker_settings, media) as (worker, handler):
        try:
            await worker.run(count=20, timeout=60)
            done = await read_records(worker_settings.topics.media, count=16)
            assert sorted(EVENTS.decode(r.value)["messageId"] for r in done) == fast_ids
            assert len(slow.hits) == 2  # the per-host limit: two at a time on the slow host
            # A fast record's event can be read a moment before its task leaves the count.
            async with asyncio.timeout(10):
                while handler.in_flight() > 4:  # noqa: ASYNC110 (a count: polled)
                    await asyncio.sleep(0.01)
            assert handler.in_flight() == 4
            assert await handler.flush({tp: 20}) == {tp: 0}  # not past the lowest unfinished
        finally:
            slow.gate.set()
    assert await committed(worker_settings) == 20
    records = await read_records(worker_settings.topics.media, count=20)
    assert len({EVENTS.decode(r.value)["messageId"] for r in records}) == 20


async def test_a_failing_host_with_more_records_than_download_slots_does_not_stall_a_fast_host(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    down, fast = MediaServer(), MediaServer()
    down_base, fast_base = await serve(down.app()), await serve(fast.app())
    for n in range(12):  # three times the worker's download slots: 503, retry in 30 s
        sha = down.add(f"{n}.bin", os.urandom(100))
        await publish(media_push("video", f"down{n}", f"{down_base}/unavailable/{n}.bin", sha))
    fast_ids = await publish_fast(publish, fast, fast_base)  # behind them in the partition

    media = dataclasses.replace(
        media_settings,
        concurrency=4,
        per_host=2,
        retries=dataclasses.replace(media_settings.retries, retry_after_max=60),
        drain_timeout=0,  # at stop, the sleeping retries are cancelled: uncommitted
    )
    async with media_worker(worker_settings, media) as (worker, handler):
        await worker.run(count=28, timeout=60)
        # Long before any of the failing host's retries is due: its sleeping records hold no
        # download slot, so the fast host's records are fetched meanwhile.
        done = await read_records(worker_settings.topics.media, count=16, timeout=20)
        assert sorted(EVENTS.decode(r.value)["messageId"] for r in done) == fast_ids
        assert len(down.hits) == 12  # each failing record tried once, none waiting for a slot
        async with asyncio.timeout(10):  # the fast records' tasks end just after their events
            while handler.in_flight() > 12:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert handler.in_flight() == 12
    assert await committed(worker_settings) == 0  # in order: not past the first failing record


async def test_an_unexpected_failure_stops_the_worker_and_nothing_past_it_is_committed(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    data = os.urandom(1000)
    sha = server.add("a.bin", data)
    # The store cannot create the object's directory: a fault of the machine, not the record.
    digest = hashlib.sha256(data).hexdigest()
    (media_settings.root / "sha256").mkdir(parents=True)
    (media_settings.root / "sha256" / digest[:2]).write_bytes(b"in the way")
    await publish(media_push("image", "m0", f"{base}/files/a.bin", sha))
    await publish(media_push("image", "m1", f"{base}/files/a.bin", sha))

    with pytest.raises(HandlerFailed, match="a media task failed"):
        async with media_worker(worker_settings, media_settings) as (worker, _):
            await worker.run(count=2, timeout=60)
    assert await committed(worker_settings) == 0


async def test_a_relative_file_path_is_resolved_against_the_base_url(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    sha = server.add("a.bin", os.urandom(1000))
    await publish(media_push("image", "m0", "a.bin", sha))
    media = dataclasses.replace(media_settings, base_url=f"{base}/files")
    async with media_worker(worker_settings, media) as (worker, _):
        await worker.run(count=1, timeout=60)
    assert server.count() == {"/files/a.bin": 1}
    [record] = await read_records(worker_settings.topics.media, count=1)
    assert EVENTS.decode(record.value)["messageId"] == "m0"


async def test_stop_waits_for_in_flight_downloads_before_the_final_commit(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    for n in range(3):
        sha = server.add(f"{n}.bin", os.urandom(1000))
        await publish(media_push("image", f"m{n}", f"{base}/gated/{n}.bin", sha))
    media = dataclasses.replace(
        media_settings, timeouts=MediaTimeouts(connect=2, read=60, attempt=60)
    )
    async with media_worker(worker_settings, media) as (worker, handler):
        await worker.run(count=3, timeout=60)
        assert handler.in_flight() == 3
        # The drain (in media_worker's exit) waits: open the gate once it is waiting.
        asyncio.get_running_loop().call_soon(server.gate.set)
    assert handler.in_flight() == 0
    assert await committed(worker_settings) == 3


async def test_a_drain_that_times_out_cancels_and_commits_nothing_unfinished(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    ok = server.add("ok.bin", os.urandom(1000))
    gated = server.add("gated.bin", os.urandom(1000))
    await publish(media_push("image", "m0", f"{base}/files/ok.bin", ok))
    await publish(media_push("image", "m1", f"{base}/gated/gated.bin", gated))
    media = dataclasses.replace(
        media_settings, timeouts=MediaTimeouts(connect=2, read=60, attempt=60), drain_timeout=0.5
    )
    try:
        async with media_worker(worker_settings, media) as (worker, handler):
            await worker.run(count=2, timeout=60)
            await handler.drain()  # the gate is still closed
            assert handler.in_flight() == 1
        assert await committed(worker_settings) == 1  # m0 only
    finally:
        server.gate.set()  # lets the server finish the cancelled request


async def test_a_revoked_partition_has_its_downloads_cancelled_and_announces_nothing(
    serve: Server,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    for n in range(3):
        sha = server.add(f"{n}.bin", os.urandom(1000))
        await publish(media_push("image", f"m{n}", f"{base}/gated/{n}.bin", sha))
    media = dataclasses.replace(
        media_settings, timeouts=MediaTimeouts(connect=2, read=60, attempt=60)
    )
    tp = TopicPartition(worker_settings.topics.messages, 0)
    try:
        async with media_worker(worker_settings, media) as (worker, handler):
            await worker.run(count=3, timeout=60)
            assert handler.in_flight() == 3
            await handler.revoked([tp])  # as the runtime calls it, after its commit
            assert handler.in_flight() == 0
            assert await handler.flush({tp: 3}) == {tp: 3}  # nothing of it left pending
    finally:
        server.gate.set()
    assert await read_records(worker_settings.topics.media) == []
    assert not [p for p in (media_settings.root / "sha256").rglob("*") if p.is_file()]
    assert not list((media_settings.root / "tmp").iterdir())  # spool files removed


# --- the store on a real S3 server (versitygw) ----------------------------------------------


@pytest.fixture
def s3_media(media_settings: MediaSettings, s3: S3Location, tmp_path: Path) -> MediaSettings:
    return dataclasses.replace(
        media_settings, root=dataclasses.replace(s3, prefix="media"), work_dir=tmp_path / "work"
    )


async def test_every_media_type_is_kept_in_the_bucket_and_announced_by_its_s3_uri(
    serve: Server,
    worker_settings: WorkerSettings,
    s3_media: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    blobs = {kind: os.urandom(1000 + n) for n, kind in enumerate(KINDS)}
    for kind in KINDS:
        sha = server.add(f"{kind}.bin", blobs[kind])
        await publish(media_push(kind, f"m-{kind}", f"{base}/files/{kind}.bin", sha))

    async with media_worker(worker_settings, s3_media) as (worker, handler):
        assert await worker.run(count=5, timeout=60) == 5
    assert handler.metrics.outcomes == {"fetched": 5}

    records = await read_records(worker_settings.topics.media, count=5)
    events = {event["type"]: event for event in map(EVENTS.decode, [r.value for r in records])}
    location = s3_media.root
    assert isinstance(location, S3Location)
    async with Bucket(location, "test") as bucket:
        for kind in KINDS:
            digest = hashlib.sha256(blobs[kind]).hexdigest()
            key = f"media/sha256/{digest[:2]}/{digest}"
            assert events[kind]["uri"] == f"s3://{location.bucket}/{key}"
            assert events[kind]["size"] == len(blobs[kind])
            assert await bucket.get(key) == blobs[kind]
            sidecar = orjson.loads(await bucket.get(f"{key}.json"))
            example = orjson.loads(EXAMPLES.joinpath(f"{kind}.json").read_bytes())
            assert sidecar["messageId"] == f"m-{kind}"
            assert sidecar["mimeType"] == example["message"][kind]["mimeType"]
    assert not list((s3_media.work_dir or Path("/nonexistent")).rglob("*.part"))


async def test_a_second_worker_elsewhere_finds_the_objects_and_fetches_nothing(
    serve: Server,
    worker_settings: WorkerSettings,
    s3_media: MediaSettings,
    tmp_path: Path,
    publish: Publish,
    read_records: Reader,
) -> None:
    server = MediaServer()
    base = await serve(server.app())
    one = server.add("one.bin", os.urandom(4000))
    two = server.add("two.bin", os.urandom(4000))
    await publish(media_push("image", "a", f"{base}/files/one.bin", one))
    await publish(media_push("sticker", "b", f"{base}/files/one.bin", one))  # same object
    await publish(media_push("audio", "c", f"{base}/files/two.bin", two))

    async with media_worker(worker_settings, s3_media) as (worker, handler):
        await worker.run(count=3, timeout=60)
    assert server.count() == {"/files/one.bin": 1, "/files/two.bin": 1}
    assert handler.metrics.outcomes == {"fetched": 2, "already_stored": 1}

    # Another host: its own working directory and group, the same bucket.
    elsewhere = dataclasses.replace(s3_media, work_dir=tmp_path / "elsewhere")
    group = dataclasses.replace(worker_settings, group_id=f"media-{uuid.uuid4().hex[:8]}")
    async with media_worker(group, elsewhere) as (worker, handler):
        await worker.run(count=3, timeout=60)
    assert handler.metrics.outcomes == {"already_stored": 3}
    assert server.count() == {"/files/one.bin": 1, "/files/two.bin": 1}
    events = await read_records(worker_settings.topics.media, count=6)
    uris = {EVENTS.decode(r.value)["uri"] for r in events}
    assert len(uris) == 2 and all(uri.startswith("s3://") for uri in uris)
