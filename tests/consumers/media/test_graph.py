"""Meta's media by id: resolved through a stand-in Graph API on loopback, downloaded, verified."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumers.media.settings import MediaRetries, MediaSettings, MediaTimeouts
from schemas import MediaCodec, PushCodec
from schemas.meta import MetaWebhook, StatusCodec
from tests.conftest import EXAMPLES, Reader, Server
from tests.consumers.conftest import SettingsFactory
from tests.consumers.media.graph_server import VERSION, GraphServer
from tests.consumers.media.test_handler import media_worker
from uplink.settings import MetaSettings, Secret, WorkerSettings

pytestmark = pytest.mark.anyio

PUSHES, EVENTS = PushCodec(), MediaCodec()
WEBHOOK = MetaWebhook(PUSHES, StatusCodec())
KINDS = ("image", "video", "audio", "document", "sticker")
TOKEN = "EAAG-graph-token"
RECORD_TIME = time.time_ns() // 1_000_000 - 3_600_000

Publish = Callable[..., Awaitable[None]]


def meta_media(kind: str, media_id: str, sha256: str, message_id: str) -> dict[str, Any]:
    """Meta's example of ``kind``, mapped to its push record, with this media id and hash."""
    body = orjson.loads((EXAMPLES / "meta" / f"{kind}.json").read_bytes())
    [message] = body["entry"][0]["changes"][0]["value"]["messages"]
    message["id"] = message_id
    message[kind].update({"id": media_id, "sha256": sha256})
    [record] = WEBHOOK.parse(orjson.dumps(body), RECORD_TIME).messages
    return record


@pytest.fixture
def worker_settings(make_worker_settings: SettingsFactory) -> WorkerSettings:
    return make_worker_settings("media", commit_interval=0.2)


@pytest.fixture
async def graph(serve: Server) -> GraphServer:
    server = GraphServer(token=TOKEN)
    server.base = await serve(server.app())
    return server


@pytest.fixture
def media_settings(tmp_path: Any, graph: GraphServer) -> MediaSettings:
    return MediaSettings(
        root=tmp_path / "media",
        allow_hosts=frozenset({"127.0.0.1"}),
        timeouts=MediaTimeouts(connect=2, read=2, attempt=20),
        retries=MediaRetries(attempts=4, backoff=0.01, backoff_max=0.05, retry_after_max=5),
        meta=MetaSettings(access_token=Secret(TOKEN), graph_url=graph.base, graph_version=VERSION),
    )


@pytest.fixture
def publish(worker_settings: WorkerSettings, producer: AIOKafkaProducer) -> Publish:
    async def send(record: dict[str, Any]) -> None:
        await producer.send_and_wait(
            worker_settings.topics.messages,
            PUSHES.encode(record),
            key=PUSHES.key(record),
            timestamp_ms=RECORD_TIME,
        )

    return send


async def test_every_media_type_from_meta_is_fetched_by_id_verified_and_announced(
    graph: GraphServer,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    blobs = {kind: os.urandom(2000 + n) for n, kind in enumerate(KINDS)}
    for n, kind in enumerate(KINDS):
        digest = graph.add(f"10{n}", blobs[kind])
        await publish(meta_media(kind, f"10{n}", digest, f"wamid.{kind}"))

    async with media_worker(worker_settings, media_settings) as (worker, handler):
        assert await worker.run(count=5, timeout=60) == 5
    assert handler.metrics.outcomes == {"fetched": 5}
    assert graph.lookups == Counter({f"10{n}": 1 for n in range(5)})
    assert graph.unauthorized == 0  # the bearer went to the Graph API and to its URL

    events = [
        EVENTS.decode(r.value or b"") for r in await read_records(worker_settings.topics.media, 5)
    ]
    assert {e["messageId"]: (e["mediaId"], e["type"]) for e in events} == {
        f"wamid.{kind}": (f"10{n}", kind) for n, kind in enumerate(KINDS)
    }
    for event in events:
        data = blobs[event["type"]]
        assert event["sha256"] == hashlib.sha256(data).hexdigest()
        path = media_settings.root / "sha256" / event["sha256"][:2] / event["sha256"]
        assert path.read_bytes() == data


@pytest.mark.parametrize("refusal", [404, 401, 403])
async def test_a_refused_url_is_resolved_again(
    graph: GraphServer,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    refusal: int,
) -> None:
    data = os.urandom(3000)
    graph.refuse = [refusal]  # the first URL has expired
    await publish(meta_media("image", "777", graph.add("777", data), "wamid.refused"))
    async with media_worker(worker_settings, media_settings) as (worker, handler):
        assert await worker.run(count=1, timeout=60) == 1
    assert handler.metrics.outcomes == {"fetched": 1}
    assert (graph.lookups["777"], graph.downloads["777"]) == (2, 2)


async def test_a_url_past_its_validity_is_not_used_again(
    graph: GraphServer,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
) -> None:
    """The first download fails for now (503); its retry would start after the URL's validity,
    so the id is resolved again instead."""
    settings = dataclasses.replace(
        media_settings,
        meta=dataclasses.replace(media_settings.meta, media_url_ttl=0.05),
        retries=MediaRetries(attempts=4, backoff=0.2, backoff_max=0.2),
    )
    graph.flaky = 1
    await publish(meta_media("video", "888", graph.add("888", os.urandom(500)), "wamid.late"))
    async with media_worker(worker_settings, settings) as (worker, handler):
        assert await worker.run(count=1, timeout=60) == 1
    assert handler.metrics.outcomes == {"fetched": 1}
    assert (graph.lookups["888"], graph.downloads["888"]) == (2, 2)


async def test_what_cannot_be_fetched_goes_to_the_dlq_with_its_reason(
    graph: GraphServer,
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    graph.add("1", b"the real bytes")
    await publish(meta_media("image", "1", hashlib.sha256(b"other").hexdigest(), "wamid.hash"))
    await publish(meta_media("audio", "404", hashlib.sha256(b"x").hexdigest(), "wamid.gone"))
    graph.refuse = [404, 404, 404]
    await publish(meta_media("document", "2", graph.add("2", b"refused forever"), "wamid.exp"))
    async with media_worker(worker_settings, media_settings) as (worker, handler):
        assert await worker.run(count=3, timeout=60) == 3
    assert handler.metrics.outcomes == {"dead_lettered": 3}
    letters = await read_records(worker_settings.dlq, 3)
    reasons = {
        PUSHES.decode(r.value or b"")["messageId"]: dict(r.headers)["uplink-dlq-reason"].decode()
        for r in letters
    }
    assert "is not the webhook's" in reasons["wamid.hash"]
    assert "HTTP 404 for media 404: Object 404 does not exist" in reasons["wamid.gone"]
    assert "3 URLs of media 2" in reasons["wamid.exp"]


async def test_without_an_access_token_meta_media_goes_to_the_dlq_naming_the_setting(
    worker_settings: WorkerSettings,
    media_settings: MediaSettings,
    publish: Publish,
    read_records: Reader,
) -> None:
    settings = dataclasses.replace(media_settings, meta=MetaSettings())
    await publish(meta_media("sticker", "5", hashlib.sha256(b"s").hexdigest(), "wamid.token"))
    async with media_worker(worker_settings, settings) as (worker, _):
        assert await worker.run(count=1, timeout=60) == 1
    [letter] = await read_records(worker_settings.dlq, 1)
    assert "UPLINK_META_ACCESS_TOKEN" in dict(letter.headers)["uplink-dlq-reason"].decode()
