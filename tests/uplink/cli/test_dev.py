"""`uplink dev` as a subprocess: every spec example through the whole pipeline, stop, resume.

`uplink dev` runs as a newcomer runs it: with no KAFKA_BOOTSTRAP_SERVERS, so it starts its own
local broker with its data under --var-dir, and the second run resumes on that data. Media is
served by a loopback uvicorn app, and the example rules file is used as shipped except for its
HTTP endpoint, pointed at a loopback receiver. Then as the installed command in an empty
directory, with the rules it ships, tried with the curl its banner prints.

Every run's console (stdout and stderr, as a terminal shows them) is held to what a newcomer
should meet: no ERROR line, none of the broker's INFO log (that is in var/kafka/broker.log, with
its warnings and errors also on the console), and the banner printed once every part answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import shutil
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
from uplink.cli.dev import DevError, DevSettings, Pipeline

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CODEC = PushCodec()
EVENTS = MediaCodec()
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
DLQS = ("uplink.archive.dlq.v1", "uplink.media.dlq.v1", "uplink.router.dlq.v1")
ERROR = re.compile(r" ERROR |\] ERROR ")  # a Python log record's level, or the broker's
# The broker's report of its own slowness on a loaded machine: about the host, not the pipeline.
HOST_SLOW = "Exceptionally slow controller event"
BROKER_RECORD = re.compile(r"\[[^\]]*\] (?P<level>[A-Z]+) ")  # log4j2.properties: [%d] %p %m
BANNER_END = "--data-binary '"  # the banner's last line: the curl's push


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
    check: Callable[[str], Awaitable[None]] | None = None,
    *,
    var: Path,
    cwd: Path | None = None,
    curl_in: Path | None = None,
) -> str:
    """Start `uplink dev` (its workers on free metrics ports, which its banner names); once its
    banner is printed, every part must answer at once. Run the banner's curl (in ``curl_in``), post
    ``sends`` (each must get 200), wait until each of the three workers has judged every record
    of the topic, ``check`` while it runs (given the banner), then SIGTERM: every part must stop
    cleanly (dev's exit code says so). The console must have no ERROR line and none of the
    broker's INFO records, which are appended to var/kafka/broker.log with this run's start.
    Returns the console: what dev and its parts printed, stdout and stderr as they came."""
    broker_log = var / "kafka" / "broker.log"
    logged_before = broker_log.read_text() if broker_log.exists() else ""
    dev = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert dev.stdout is not None
    printed: list[str] = []
    banner: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def read_console(stdout: asyncio.StreamReader) -> None:
        async for line in stdout:
            printed.append(line.decode())
            if BANNER_END in printed[-1] and not banner.done():
                first = max(i for i, line in enumerate(printed) if line.startswith("uplink dev: "))
                banner.set_result("".join(printed[first:]))
        if not banner.done():
            banner.set_exception(AssertionError("no banner:\n" + "".join(printed[-60:])))

    reader = asyncio.create_task(read_console(dev.stdout))
    try:
        async with asyncio.timeout(120):
            shown = await banner
        found = re.search(r"metrics on (\d+), (\d+), (\d+)", shown)
        assert found, shown
        ports = [int(p) for p in found.groups()]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            # The banner comes once everything is up: each part answers at the first asking.
            assert (await client.get("/readyz")).status_code == 200
            for worker_port in ports:
                answer = await client.get(f"http://127.0.0.1:{worker_port}/metrics")
                assert answer.status_code == 200, worker_port
            expected = len(sends)
            if curl_in is not None:
                await run_banner_curl(shown, cwd=curl_in)
                expected += 1
            for body in sends:
                answer = await client.post("/v1/uplink", content=body)
                assert answer.status_code == 200, answer.text
            async with asyncio.timeout(90):
                for worker_port in ports:
                    while await seen(client, worker_port) < expected:  # noqa: ASYNC110
                        await asyncio.sleep(0.1)
        if check is not None:
            await check(shown)
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGTERM)
        async with asyncio.timeout(90):
            assert await dev.wait() == 0, "".join(printed[-60:])
            await reader
    console = "".join(printed)
    lines = console.splitlines()
    assert sum(BANNER_END in line for line in lines) == 1
    assert not [line for line in lines if ERROR.search(line) and HOST_SLOW not in line], console
    # The broker's log: appended to, this run's start and INFO records there, not on the console;
    # its warnings and errors there and on the console, prefixed.
    logged = broker_log.read_text()
    assert logged.startswith(logged_before)
    this_run = logged[len(logged_before) :].splitlines()
    assert sum("Kafka Server started" in line for line in this_run) == 1
    levels = {m["level"] for line in this_run if (m := BROKER_RECORD.match(line))}
    assert "INFO" in levels
    assert not [line for line in lines if re.match(r"(kafka: )?\[[^\]]*\] INFO ", line)]
    problems = [line for line in this_run if re.match(r"\[[^\]]*\] (WARN|ERROR) ", line)]
    assert {f"kafka: {line}" for line in problems} <= set(lines)
    return console


async def run_banner_curl(banner: str, cwd: Path) -> None:
    """Run the banner's curl as printed (two lines, joined by the shell) in ``cwd``: the
    ingress answers 200 with the push's messageId."""
    if shutil.which("curl") is None:
        pytest.skip("no curl on PATH to run the banner's command with")
    command = banner[banner.index("curl ") : banner.index("\n", banner.index(BANNER_END))]
    pushed = re.search(r"--data-binary '(\{.*\})'$", command)
    assert pushed, command
    message_id = orjson.loads(pushed[1])["messageId"]
    done = await asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=cwd, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await done.communicate()
    assert done.returncode == 0, out
    assert out.decode() == f'{{"messageId":"{message_id}"}} 200\n'


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
        [sys.executable, "-m", "uplink.cli.main", "dev", "--help"], capture_output=True, check=True
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
        [sys.executable, "-m", "uplink.cli.main", "dev", "--var-dir", str(var), "--port", "0"],
        env=env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 78, done.stderr.decode()
    assert "UPLINK_MEDIA_CONCURRENCY" in done.stderr.decode()
    assert not var.exists()  # no broker, no data directory: stopped before anything started


def test_dev_names_the_parts_that_did_not_come_up_and_stops_waiting_for_one_that_exited(
    tmp_path: Path,
) -> None:
    settings = DevSettings(
        var_dir=tmp_path, port=free_port(), metrics_port=0, console_port=0, ready_timeout=1.0
    )
    pipeline = Pipeline(settings, {})
    started = pipeline._parts
    try:
        for part in started:  # up, but answering nowhere: their ports are closed
            part.process = subprocess.Popen(["sleep", "60"])
        with pytest.raises(DevError) as failed:
            pipeline._until_ready()
        message = str(failed.value)
        assert message.startswith("not up within 1 s: the ingress (http://127.0.0.1:")
        for part in started:
            assert f"the {part.name} ({part.ready_url}: " in message
        # One that exits is not waited for: it is the failure.
        media = started[2].process
        assert media is not None
        media.kill()
        media.wait()
        assert pipeline._until_ready() is started[2]
    finally:
        for part in started:
            if part.process is not None and part.process.poll() is None:
                part.process.kill()
                part.process.wait()


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
        sys.executable, "-m", "uplink.cli.main", "dev", "--port", str(port), "--var-dir", str(var),
        "--metrics-port", "0", "--console-port", "0", "--rules", str(tmp_path / "rules.toml"),
        "--kafka-port", str(kafka_port),
    ]  # fmt: skip
    media_root = var / "media" / "sha256"

    def stored() -> int:
        return sum(1 for p in media_root.glob("*/*") if not p.name.endswith(".json"))

    first = pushes(receivers, base, f"first-{suffix}")
    printed = await run_dev(argv, env, port, list(first.values()), var=var)
    for where in (
        f"{bootstrap}  (data and broker.log in {var.resolve() / 'kafka'})",
        f":{port}/v1/uplink",
    ):
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

    async def check(banner: str) -> None:
        # The router commits its offsets in the transactions of its outputs.
        await committed_through(bootstrap, "uplink-router", len(first) + len(sends))
        for topic, ids in routes.items():
            # The transaction's markers reach each output partition after its offsets commit:
            # wait for the records, then read to the end again, so a duplicate would show.
            await read_records(topic, count=ids.total(), bootstrap=bootstrap)
            routed = await read_records(topic, bootstrap=bootstrap)
            assert Counter(CODEC.head(r.value or b"")[0] for r in routed) == ids, topic
        for dlq in DLQS:
            assert await read_records(dlq, bootstrap=bootstrap) == [], dlq
        events = await read_records("uplink.media.v1", bootstrap=bootstrap)
        assert {EVENTS.decode(e.value or b"")["messageId"] for e in events} == media_ids

    await run_dev(argv, env, port, sends, check, var=var)
    assert archived(var / "archive") == Counter(expected.keys())
    assert receivers.fetched == Counter(MEDIA_TYPES)  # every object fetched once, never again
    assert set(receivers.posted) == posts  # the support desk got each support push


async def test_dev_comes_up_in_an_empty_directory_with_the_rules_it_ships(
    tmp_path: Path, read_records: Reader
) -> None:
    """The installed `uplink dev` with no options but its ports, where there is nothing: its
    data under ./var, the rules from the package, and the banner's curl works from elsewhere."""
    here = tmp_path / "empty"
    here.mkdir()
    (tmp_path / "elsewhere").mkdir()  # where the banner's curl is run
    installed = Path(sys.executable).parent / "uplink"
    command = [str(installed)] if installed.exists() else [sys.executable, "-m", "uplink.cli.main"]
    env = dict(os.environ)
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "UPLINK_TOKEN"):
        env.pop(name, None)
    port, kafka_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{kafka_port}"
    argv = [*command, "dev", "--port", str(port), "--kafka-port", str(kafka_port)]
    argv += ["--metrics-port", "0", "--console-port", "0"]
    rules = compile_rules(tomllib.loads(example_rules().read_text()), {}, source="example")
    routed: list[str] = []

    async def check(banner: str) -> None:
        pushed = banner.split(BANNER_END)[1].split("'")[0].encode()
        actions = [action for _, action in rules.route(CODEC.parse(pushed, 0)).pairs]
        assert actions == [ToTopic("uplink.analytics.v1")]  # what the shipped rules do with it
        await committed_through(bootstrap, "uplink-router", 1)
        analytics = await read_records("uplink.analytics.v1", bootstrap=bootstrap)
        routed.extend(CODEC.head(r.value or b"")[0] for r in analytics)

    printed = await run_dev(
        argv, env, port, [], check, var=here / "var", cwd=here, curl_in=tmp_path / "elsewhere"
    )
    assert f"router     rules in {example_rules()}\n" in printed
    assert f"(data and broker.log in {here / 'var' / 'kafka'})" in printed
    assert sorted(p.name for p in here.iterdir()) == ["var"]
    message_id = re.findall(r'"messageId":"([0-9a-f]{32})"', printed)[0]
    assert routed == [message_id]
    assert archived(here / "var" / "archive") == Counter([message_id])
