"""`uplink dev` as a subprocess: every spec example through the whole pipeline, stop, resume.

The pipeline runs against the session's broker (``KAFKA_BOOTSTRAP_SERVERS``), on topics of its
own; media is served by a loopback uvicorn app, and the example rules file is used as shipped
except for its HTTP endpoint, pointed at a loopback receiver.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader, Server
from uplink.broker import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CODEC = PushCodec()
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
ANALYTICS = "uplink.analytics.v1"  # examples/rules.toml: a copy of every push


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
    """The 13 spec examples with fresh messageIds; media ones point at the loopback files."""
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
    argv: list[str], env: dict[str, str], port: int, metrics: int, sends: list[bytes]
) -> None:
    """Start `uplink dev`, post ``sends`` (each must get 200), wait until each of the three
    workers has judged every record of the topic, then SIGTERM (which commits)."""
    dev = await asyncio.create_subprocess_exec(*argv, env=env, stdout=asyncio.subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async with asyncio.timeout(90):
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
                for worker_port in (metrics, metrics + 1, metrics + 2):
                    while await seen(client, worker_port) < len(sends):  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGTERM)
        async with asyncio.timeout(90):
            assert await dev.wait() == 0


def archived(root: Path) -> Counter[str]:
    assert not list(root.rglob("*.tmp"))
    counts: Counter[str] = Counter()
    for path in root.rglob("*.avro"):
        with path.open("rb") as stream:
            counts.update(str(r["messageId"]) for r in fastavro.reader(stream))  # type: ignore[index]
    return counts


async def test_dev_runs_the_pipeline_and_resumes_without_loss_or_duplicates(
    tmp_path: Path, kafka_bootstrap: str, serve: Server, read_records: Reader
) -> None:
    receivers = Receivers()
    base = await serve(receivers.app)
    rules = (ROOT / "examples" / "rules.toml").read_text()
    assert "http://127.0.0.1:9001/hooks/whatsapp" in rules
    (tmp_path / "rules.toml").write_text(rules.replace("http://127.0.0.1:9001", base))
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "UPLINK_TOPIC_MESSAGES": f"dev.messages.{suffix}",
        "UPLINK_TOPIC_QUARANTINE": f"dev.quarantine.{suffix}",
        "UPLINK_TOPIC_MEDIA": f"dev.media.{suffix}",
        "UPLINK_TOPIC_DLQ": f"dev.{suffix}.{{worker}}.dlq",
        "UPLINK_MEDIA_ALLOW_HOSTS": "127.0.0.1",
    }
    port, metrics = free_port(), free_port()  # archive, media and router: metrics + 0, 1, 2
    var = tmp_path / "var"
    argv = [
        sys.executable, "-m", "uplink.cli", "dev", "--port", str(port), "--var-dir", str(var),
        "--metrics-port", str(metrics), "--rules", str(tmp_path / "rules.toml"),
    ]  # fmt: skip
    media_root = var / "media" / "sha256"

    def stored() -> int:
        return sum(1 for p in media_root.glob("*/*") if not p.name.endswith(".json"))

    first = pushes(receivers, base, f"first-{suffix}")
    await run_dev(argv, env, port, metrics, list(first.values()))
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
    await run_dev(argv, env, port, metrics, sends)
    assert archived(var / "archive") == Counter(expected.keys())
    assert receivers.fetched == Counter(MEDIA_TYPES)  # every object fetched once, never again
    routed = await read_records(ANALYTICS, timeout=60)  # all of it, to its end
    assert Counter(CODEC.head(r.value)[0] for r in routed) == Counter(expected.keys())
