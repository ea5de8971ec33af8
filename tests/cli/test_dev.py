"""`uplink dev` as a subprocess: every spec example through the whole pipeline, stop, resume.

`uplink dev` runs as a newcomer runs it: with no KAFKA_BOOTSTRAP_SERVERS, so it starts its own
local broker with its data under --var-dir, and the second run resumes on that data. Media is
served by a loopback uvicorn app, and the example rules file is used as shipped except for its
HTTP endpoint, pointed at a loopback receiver.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import tomllib
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consumers.router.rules import PostTo, ToTopic, compile_rules, example_rules
from schemas import MediaCodec, PushCodec
from tests.conftest import EXAMPLES, Reader, Server
from tests.consumers.crashes import committed_past
from uplink.broker import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CODEC = PushCodec()
EVENTS = MediaCodec()
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
DLQS = ("uplink.archive.dlq.v1", "uplink.media.dlq.v1", "uplink.router.dlq.v1")


class Receivers:
    """The media files and the support desk's endpoint; counts what was asked of them."""

    def __init__(self) -> None:
        self.files = {
            kind: f"{kind} bytes {uuid.uuid4().hex}".encode() * 50 for kind in MEDIA_TYPES
        }
        self.fetched: Counter[str] = Counter()
        self.posted: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/files/{kind}", self.file, methods=["GET"]),
                Route("/hooks/whatsapp", self.hook, methods=["POST"]),
            ]
        )

    async def file(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        self.fetched[kind] += 1
        return Response(self.files[kind], media_type="application/octet-stream")

    async def hook(self, request: Request) -> Response:
        self.posted.append(request.headers["idempotency-key"])
        return Response(status_code=204)


def pushes(receivers: Receivers, base: str, tag: str) -> dict[str, bytes]:
    """The 13 spec examples with fresh messageIds (media ones point at the loopback files), and
    a plea for help."""
    bodies = {}
    for path in sorted(EXAMPLES.glob("*.json")):
        body: dict[str, Any] = orjson.loads(path.read_bytes())
        body["messageId"] = f"{tag}-{path.stem}"
        kind = (body.get("message") or {}).get("type")
        if kind in MEDIA_TYPES:
            media = body["message"][kind]
            media["filePath"] = f"{base}/files/{kind}"
            media["sha256"] = base64.b64encode(
                hashlib.sha256(receivers.files[kind]).digest()
            ).decode()
        bodies[body["messageId"]] = orjson.dumps(body)
    # And a customer asking for help: the rules' support desk (a topic and an HTTP POST).
    help_body = orjson.loads((EXAMPLES / "text.json").read_bytes())
    help_body["messageId"] = f"{tag}-help"
    help_body["message"]["text"]["body"] = "Hi, I need help with my delivery"
    bodies[help_body["messageId"]] = orjson.dumps(help_body)
    return bodies


async def seen(client: httpx.AsyncClient, metrics_port: int) -> float:
    """Records a worker has judged so far (handled, skipped as duplicates, dead-lettered)."""
    try:
        text = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    except httpx.TransportError:
        return 0  # not serving yet
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(
            (
                "uplink_worker_processed_total{",
                "uplink_worker_duplicates_total{",
                "uplink_worker_dead_lettered_total{",
            )
        )
    )


async def run_dev(
    argv: list[str],
    env: dict[str, str],
    port: int,
    sends: list[bytes],
    check: Callable[[], Awaitable[None]] | None = None,
) -> str:
    """Start `uplink dev` (its workers on free metrics ports, which its banner names), post
    ``sends`` (each must get 200), wait until each of the three workers has judged every record
    of the topic, ``check`` while it runs, then SIGTERM: every part must stop cleanly (dev's
    exit code says so). Returns what dev printed."""
    dev = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.PIPE)
    assert dev.stdout is not None
    printed: list[str] = []
    metrics: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()

    async def read_banner(stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            printed.append(line.decode())
            found = re.search(r"metrics on (\d+), (\d+), (\d+)", printed[-1])
            if found and not metrics.done():
                metrics.set_result([int(p) for p in found.groups()])

    reader = asyncio.create_task(read_banner(dev.stdout))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(90):
                ports = await metrics
                while True:
                    try:
                        if (await client.get("/readyz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass  # not listening yet
                    assert dev.returncode is None, "uplink dev exited during start-up"
                    await asyncio.sleep(0.1)
            for body in sends:
                answer = await client.post("/v1/uplink", content=body)
                assert answer.status_code == 200, answer.text
            async with asyncio.timeout(90):
                for worker_port in ports:
                    while await seen(client, worker_port) < len(sends):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
        if check is not None:
            await check()
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGTERM)
        async with asyncio.timeout(90):
            assert await dev.wait() == 0
            await reader
    return "".join(printed)


async def committed_through(bootstrap: str, group: str, total: int) -> None:
    """Wait until ``group`` committed ``total`` records of its topic (partitions from 0): for the
    router, every transaction with their outputs is committed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        async with asyncio.timeout(60):
            await committed_past(admin, group, total - 1)
    finally:
        await admin.close()


def archived(root: Path) -> Counter[str]:
    assert not list(root.rglob("*.tmp"))
    counts: Counter[str] = Counter()
    for path in root.rglob("*.avro"):
        with path.open("rb") as stream:
            counts.update(str(r["messageId"]) for r in fastavro.reader(stream))  # type: ignore[index]
    return counts


def test_dev_help_lists_its_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "dev", "--help"], capture_output=True, check=True
    )
    text = done.stdout.decode()
    for option in ("--host", "--port", "--kafka-port", "--var-dir", "--rules", "--metrics-port"):
        assert option in text, option
    assert "KAFKA_BOOTSTRAP_SERVERS" in text


def test_dev_refuses_a_bad_setting_of_any_part_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "UPLINK_MEDIA_CONCURRENCY": "0"}  # read by the media worker only
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    var = tmp_path / "var"
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "dev", "--var-dir", str(var), "--port", "0"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr.decode()
    assert "UPLINK_MEDIA_CONCURRENCY" in done.stderr.decode()
    assert not var.exists()  # no broker, no data directory: stopped before anything started


async def test_dev_runs_the_pipeline_and_resumes_without_loss_or_duplicates(
    tmp_path: Path, serve: Server, read_records: Reader
) -> None:
    receivers = Receivers()
    base = await serve(receivers.app)
    rules_text = example_rules().read_text()
    assert "http://127.0.0.1:9001/hooks/whatsapp" in rules_text
    rules_text = rules_text.replace("http://127.0.0.1:9001", base)
    (tmp_path / "rules.toml").write_text(rules_text)
    rules = compile_rules(tomllib.loads(rules_text), {}, source="rules.toml")
    suffix = uuid.uuid4().hex[:8]
    env = {**os.environ, "UPLINK_MEDIA_ALLOW_HOSTS": "127.0.0.1"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # dev's own broker, as a newcomer runs it
    port, kafka_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{kafka_port}"
    var = tmp_path / "var"
    argv = [
        sys.executable, "-m", "cli.main", "dev", "--port", str(port), "--var-dir", str(var),
        "--metrics-port", "0", "--rules", str(tmp_path / "rules.toml"),
        "--kafka-port", str(kafka_port),
    ]  # fmt: skip
    media_root = var / "media" / "sha256"

    def stored() -> int:
        return sum(1 for p in media_root.glob("*/*") if not p.name.endswith(".json"))

    first = pushes(receivers, base, f"first-{suffix}")
    printed = await run_dev(argv, env, port, list(first.values()))
    for where in (f"{bootstrap}  (data in {var.resolve() / 'kafka'})", f":{port}/v1/uplink"):
        assert where in printed, printed
    assert "curl" in printed and str(var.resolve() / "archive") in printed
    assert (var / "kafka").is_dir()  # the broker's data, kept for the next run
    assert stored() == len(MEDIA_TYPES)
    assert archived(var / "archive") == Counter(
        first.keys()
    )  # SIGTERM closed and committed every file
    for data in receivers.files.values():
        digest = hashlib.sha256(data).hexdigest()
        assert (media_root / digest[:2] / digest).read_bytes() == data

    # The provider retries all of them, and sends as many new ones: a second `uplink dev` on the
    # same data judges the retries duplicates and loses none of the new ones.
    second = pushes(receivers, base, f"second-{suffix}")
    expected = {**first, **second}
    sends = [*first.values(), *second.values()]
    routes: dict[str, Counter[str]] = {}  # topic → messageIds the rules send there
    posts: set[str] = set()
    for message_id, body in expected.items():
        for _, action in rules.route(CODEC.parse(body, 0)).pairs:
            if isinstance(action, ToTopic):
                routes.setdefault(action.topic, Counter())[message_id] += 1
            elif isinstance(action, PostTo):
                posts.add(message_id)
    assert {"uplink.analytics.v1", "uplink.support.v1", "uplink.media-inbox.v1"} <= set(routes)
    media_ids = {
        message_id
        for message_id, body in expected.items()
        if (CODEC.parse(body, 0)["message"] or {}).get("type") in MEDIA_TYPES
    }
    assert len(media_ids) == 2 * len(MEDIA_TYPES)

    async def check() -> None:
        # The router commits its offsets in the transactions of its outputs.
        await committed_through(bootstrap, "uplink-router", len(first) + len(sends))
        for topic, ids in routes.items():
            routed = await read_records(topic, bootstrap=bootstrap)
            assert Counter(CODEC.head(r.value or b"")[0] for r in routed) == ids, topic
        for dlq in DLQS:
            assert await read_records(dlq, bootstrap=bootstrap) == [], dlq
        events = await read_records("uplink.media.v1", bootstrap=bootstrap)
        assert {EVENTS.decode(e.value or b"")["messageId"] for e in events} == media_ids

    await run_dev(argv, env, port, sends, check)
    assert archived(var / "archive") == Counter(expected.keys())
    assert receivers.fetched == Counter(MEDIA_TYPES)  # every object fetched once, never again
    assert set(receivers.posted) == posts  # the support desk got each support push
