"""Meta's webhook through the whole pipeline: ingress, router, media (by id), archive.

The parts are wired as ``uplink dev`` wires them (uplink/cli/workers.py) and run in this process on
the session's broker: every example POST of Meta's reference is signed and posted to /v1/meta (one
of them twice, as Meta retries), then each worker reads the messages topic. The router sends
each message once to the topics the example rules choose, the media worker fetches each media
id once through a stand-in Graph API, the archive keeps each message once.
"""

from __future__ import annotations

import dataclasses
import tomllib
import uuid
from collections import Counter
from pathlib import Path

import fastavro
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumers.archive.settings import ArchiveSettings
from consumers.media.settings import MediaSettings, MediaTimeouts
from consumers.router.rules import ToTopic, compile_rules, example_rules
from consumers.router.settings import RouterSettings
from ingress.app import create_app
from schemas import MediaCodec, PushCodec
from schemas.meta import MetaWebhook, StatusCodec
from tests.conftest import EXAMPLES, Reader, Server, wait_ready
from tests.consumers.media.graph_server import VERSION, GraphServer
from tests.ingress.test_meta import meta_settings, signed
from uplink.cli import workers
from uplink.cli.launcher import started
from uplink.settings import IngressSettings, MetaSettings, Secret, WorkerSettings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

PUSHES, EVENTS = PushCodec(), MediaCodec()
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
TOKEN = "EAAG-pipeline"


def posts(graph: GraphServer) -> dict[str, bytes]:
    """Every Meta example with messages or statuses; media ids point at the stand-in Graph."""
    bodies = {}
    for path in sorted((EXAMPLES / "meta").glob("*.json")):
        body = orjson.loads(path.read_bytes())
        for message in body["entry"][0]["changes"][0]["value"].get("messages", []):
            kind = message["type"]
            if kind in MEDIA_TYPES:
                media_id = f"{uuid.uuid4().int % 10**15}"
                data = f"{kind} {uuid.uuid4().hex}".encode() * 40
                message[kind].update({"id": media_id, "sha256": graph.add(media_id, data)})
        bodies[path.stem] = orjson.dumps(body)
    return bodies


async def test_metas_webhook_through_router_media_and_archive(
    serve: Server,
    ingress_settings: IngressSettings,
    read_records: Reader,
    tmp_path: Path,
) -> None:
    graph = GraphServer(token=TOKEN)
    graph.base = await serve(graph.app())
    desk = Starlette(routes=[Route("/hook", _no_content, methods=["POST"])])
    desk_url = await serve(desk)

    suffix = uuid.uuid4().hex[:8]
    rules_text = (
        example_rules()
        .read_text()
        .replace('"uplink.', f'"test.{suffix}.')
        .replace("http://127.0.0.1:9001/hooks/whatsapp", f"{desk_url}/hook")
    )
    rules = compile_rules(tomllib.loads(rules_text), {}, source="rules.toml")
    topics = dataclasses.replace(
        ingress_settings.topics, dlq_pattern=f"test.{suffix}.{{worker}}.dlq"
    )
    settings = meta_settings(dataclasses.replace(ingress_settings, topics=topics))
    ingress = await serve(create_app(settings))

    bodies = posts(graph)
    sends = [*bodies.values(), bodies["image"], bodies["several"]]  # two of them retried
    async with httpx.AsyncClient() as client:
        await wait_ready(client, ingress)
        for body in sends:
            answer = await client.post(f"{ingress}/v1/meta", content=body, headers=signed(body))
            assert answer.status_code == 200, answer.text

    webhook = MetaWebhook(PUSHES, StatusCodec())
    records = [r for body in bodies.values() for r in webhook.parse(body, 0).messages]
    unique = {r["messageId"]: r for r in records}
    assert len(unique) == len(records) == 24
    total = len(records) + 3 + 1  # the retried image POST has one message, "several" three

    def worker(name: str) -> WorkerSettings:
        return WorkerSettings(
            name=name,
            kafka=settings.kafka,
            topics=topics,
            group_id=f"{name}-{suffix}",
            commit_interval=0.2,
        )

    async with started(workers.archive(worker("archive"), ArchiveSettings(tmp_path / "a"))) as a:
        assert await a.workers[0].run(count=total, timeout=60) == total
    media = MediaSettings(
        root=tmp_path / "media",
        allow_hosts=frozenset({"127.0.0.1"}),
        timeouts=MediaTimeouts(connect=2, read=2, attempt=20),
        meta=MetaSettings(access_token=Secret(TOKEN), graph_url=graph.base, graph_version=VERSION),
    )
    async with started(workers.media(worker("media"), media)) as m:
        assert await m.workers[0].run(count=total, timeout=60) == total
    router = RouterSettings(delays=(0.2,), delay_pattern=f"test.{suffix}.delay.{{step}}")
    async with started(workers.router(worker("router"), router, rules)) as r:
        assert await r.workers[0].run(count=total, timeout=60) == total

    # Archive: every message once, its raw the POST it came in.
    archived: Counter[str] = Counter()
    for path in (tmp_path / "a").rglob("*.avro"):
        with path.open("rb") as stream:
            for kept in fastavro.reader(stream):
                assert isinstance(kept, dict)
                archived[kept["messageId"]] += 1
                assert kept["source"] == "meta" and kept["raw"] in bodies.values()
    assert archived == Counter(unique.keys())

    # Media: each id resolved and fetched once, announced once per media message.
    media_ids = {
        r["messageId"]: r["message"][r["message"]["type"]]["id"]
        for r in unique.values()
        if r["message"]["type"] in MEDIA_TYPES
    }
    assert len(media_ids) == 6  # five types, and the image of "several"
    events = [EVENTS.decode(e.value or b"") for e in await read_records(topics.media)]
    assert {e["messageId"]: e["mediaId"] for e in events} == media_ids
    assert graph.lookups == Counter(media_ids.values()) and graph.unauthorized == 0
    for event in events:
        path = media.root / "sha256" / event["sha256"][:2] / event["sha256"]
        assert path.read_bytes() == graph.files[event["mediaId"]]

    # Router: each message to the topics its rules choose, once; the source rule among them.
    routes: dict[str, Counter[str]] = {}
    for message_id, record in unique.items():
        view = PUSHES.decode(PUSHES.encode(record))
        for _, action in rules.route(view).pairs:
            if isinstance(action, ToTopic):
                routes.setdefault(action.topic, Counter())[message_id] += 1
    assert routes[f"test.{suffix}.meta-orders.v1"] == Counter(
        ["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQORDER"]
    )
    assert len(routes[f"test.{suffix}.analytics.v1"]) == 24
    for topic, ids in routes.items():
        routed = await read_records(topic)
        assert Counter(PUSHES.decode(r.value or b"")["messageId"] for r in routed) == ids, topic
    for name in ("archive", "media", "router"):
        assert await read_records(topics.dlq(name)) == [], name

    # Statuses and other fields, in their own topics (each retried status twice: no worker
    # reads them yet, their eventId is the key to dedupe by).
    statuses = [StatusCodec().decode(s.value or b"") for s in await read_records(topics.statuses)]
    assert Counter(s["eventId"] for s in statuses).most_common(1)[0][1] == 2
    assert len({s["eventId"] for s in statuses}) == 5


async def _no_content(request: Request) -> Response:
    return Response(status_code=204)
