"""Load benchmark: the ingress against a bare Starlette endpoint, same server settings, same run.

    .venv/bin/python -m bench.ingress_load [--duration 15] [--connections 64] [--profile]
        [--against TREE [--against-server granian]] [--peer camel|go]
    .venv/bin/python -m bench.ingress_load --registry    # Confluent framing against without
    .venv/bin/python -m bench.ingress_load --meta [--duration 15] [--connections 64]

With --meta, one ingress (Meta's webhook configured) instead: POST /v1/uplink against
POST /v1/meta with one message a POST and with ten, alternating in each round; its own row and
section ("Meta webhook load").

Both servers run under uvicorn (uvloop, httptools, one worker) on loopback; wrk posts the spec's
example pushes (unique messageIds) to each in turn; the broker runs on this machine too. Writes its
row and section into bench/RESULTS.md: the ratio, latencies, CPU per request, peak RSS and, with
--profile, where an ingress request spends its time (py-spy, sampled during a third load run).
With --peer camel, the HTTP -> Kafka edge bench/peers/camel builds with Apache Camel runs in the
same rounds against the same broker (its jars are resolved by bench/peers/camel/build: Maven).
With ``--registry``, the two servers are instead the ingress as configured by default
(single-object encoding) and the ingress with ``UPLINK_SCHEMA_REGISTRY_URL`` (a local Apicurio
Registry; the schema registered at start-up, the Confluent framing on every record), on topics of
their own: what the registry costs the hot path. Each round runs in the reverse order of the one
before, so a drift favours no endpoint.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import hmac
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from bench.load import REPORT, cpu_seconds, lua_list, report, server_stats
from bench.pushes import EXAMPLES
from bench.results import ROOT, command, run_line, write_run

if TYPE_CHECKING:
    from uplink.settings import KafkaSettings

BAR = 0.60  # of the bare endpoint, at 64 and at 256 connections (it was 40 %, then 55 %)
CAMEL = ROOT / "bench" / "peers" / "camel"
GO = ROOT / "bench" / "peers" / "go"
PARTITIONS = 12  # the messages topic's (uplink.settings.Topics), for the peer's topic too
LABELS = {
    "bare": "bare Starlette (reads body, 200)",
    "bare-asgi": "bare raw ASGI app on uvicorn (reads body, 200)",
    "bare-rsgi": "bare RSGI app on granian (reads body, 200)",
    "ingress": "uplink ingress on uvicorn",
    "ingress-granian": "uplink ingress on granian (RSGI)",
    "camel": "Apache Camel 4.22.0 peer",
    "go": "Go peer (net/http + franz-go)",
}

# wrk script: rotate through the spec's examples, each with a unique messageId (bench.load
# adds the report).
LUA = r"""
local bodies = {}
%(bodies)s
local n = 0
local prefix = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = string.gsub(bodies[(n %% #bodies) + 1], "@ID@", prefix .. "-" .. n, 1)
  -- a campaign is answered by many different people: one conversation (key) each
  body = string.gsub(body, "@PHONE@", tostring(910000000000 + (n %% 50000)), 1)
  return wrk.format("POST", "/v1/uplink", {["Content-Type"] = "application/json"}, body)
end
"""

BARE_APP = """
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

async def push(request: Request) -> Response:
    await request.body()
    return Response(b'{"messageId":"x"}', media_type="application/json")

async def ready(request: Request) -> Response:
    return Response(b"ready")

app = Starlette(routes=[Route("/v1/uplink", push, methods=["POST"]), Route("/readyz", ready)])
"""

# The servers' ceilings: a body read and a 200, no framework.
RAW_APPS = """
async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", b"17")]})
    await send({"type": "http.response.body", "body": b'{"messageId":"x"}'})


class Rsgi:
    async def __rsgi__(self, scope, proto):
        if scope.method == "POST":
            await proto()
        proto.response_bytes(200, [("content-type", "application/json")], b'{"messageId":"x"}')


rsgi = Rsgi()
"""


# wrk script for /v1/meta: Lua cannot sign, so a pool of pre-signed POSTs, in rotation.
META_LUA = r"""
local bodies = {}
local signatures = {}
%(bodies)s
local n = 0
request = function()
  n = n + 1
  local i = (n %% #bodies) + 1
  return wrk.format("POST", "/v1/meta", {["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = signatures[i]}, bodies[i])
end
"""
META_SECRET = "bench-app-secret"
META_KINDS = ("text", "image", "interactive_button_reply", "location", "reaction", "contacts")


def lua_bytes(data: bytes) -> str:
    """A Lua string literal of exactly these bytes (the signature covers them)."""
    safe = {c for c in range(32, 127)} - {ord('"'), ord("\\")}
    return '"' + "".join(chr(b) if b in safe else f"\\{b:03d}" for b in data) + '"'


def meta_script(directory: Path, per_post: int, pool: int) -> Path:
    """``pool`` signed webhook POSTs of ``per_post`` messages each (Meta's examples in rotation,
    unique wamids, many senders)."""
    examples = [
        json.loads((EXAMPLES / "meta" / f"{kind}.json").read_bytes()) for kind in META_KINDS
    ]
    lines = []
    n = 0
    for index in range(pool):
        body = examples[0]
        value = {**body["entry"][0]["changes"][0]["value"], "contacts": [], "messages": []}
        for _ in range(per_post):
            example = examples[n % len(examples)]["entry"][0]["changes"][0]["value"]
            sender = str(910000000000 + n % 50000)
            message = {**example["messages"][0], "id": f"wamid.bench{n}", "from": sender}
            value["messages"].append(message)
            value["contacts"].append({"profile": {"name": f"Sender {n}"}, "wa_id": sender})
            n += 1
        post = {"object": body["object"], "entry": [{"id": body["entry"][0]["id"],
                "changes": [{"field": "messages", "value": value}]}]}  # fmt: skip
        raw = json.dumps(post, ensure_ascii=False).encode()
        signature = hmac.new(META_SECRET.encode(), raw, hashlib.sha256).hexdigest()
        lines.append(f"bodies[{index + 1}] = {lua_bytes(raw)}")
        lines.append(f'signatures[{index + 1}] = "sha256={signature}"')
    script = directory / f"meta{per_post}.lua"
    script.write_text(META_LUA % {"bodies": "\n".join(lines)} + REPORT)
    return script


def lua_script(directory: Path) -> Path:
    bodies = []
    for path in sorted(EXAMPLES.glob("*.json")):
        push = json.loads(path.read_bytes())
        push["messageId"] = "@ID@"
        push["from"]["phone"] = "@PHONE@"
        bodies.append(json.dumps(push, ensure_ascii=False))
    script = directory / "push.lua"
    script.write_text(LUA % {"bodies": lua_list("bodies", bodies)} + REPORT)
    return script


def uvicorn_cmd(
    target: str, port: int, factory: bool, workers: int, python: str = sys.executable
) -> list[str]:
    cmd = [
        python,
        "-m",
        "uvicorn",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    return cmd + (["--factory"] if factory else [])


def granian_cmd(
    target: str,
    port: int,
    factory: bool,
    workers: int,
    python: str = sys.executable,
    loop: str = "uvloop",
) -> list[str]:
    """granian on its RSGI interface, as `uplink ingress --server granian` runs it."""
    cmd = [
        python,
        "-m",
        "granian",
        "--interface",
        "rsgi",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        loop,
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]
    return [*cmd, *(["--factory"] if factory else []), target]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def rss_bytes(pid: int) -> int:
    """Resident memory of a server now: its process and its worker processes (VmRSS)."""
    total = 0
    for directory, _ in server_stats(pid):
        try:
            status = (directory / "status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


class PeakRss:
    """The largest RSS of a server's processes while the block runs, sampled every 0.2 s:
    VmHWM would be the peak since start, warm-up and earlier rounds included."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.peak = 0

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self._pid))
            if self._stop.wait(0.2):
                return

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wrk(url: str, script: Path, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return report(out)


def camel_classpath() -> str:
    """The peer's classpath: bench/peers/camel/build resolves its jars (Maven, cached)."""
    if shutil.which("mvn") is None or shutil.which("java") is None:
        sys.exit("--peer camel needs java (17+) and mvn")
    return subprocess.run(
        [str(CAMEL / "build")], stdout=subprocess.PIPE, text=True, check=True
    ).stdout.strip()


def go_binary() -> str:
    """The Go peer's binary: bench/peers/go/build builds it (Go module proxy, cached)."""
    if shutil.which("go") is None:
        sys.exit("--peer go needs the Go toolchain")
    return subprocess.run(
        [str(GO / "build")], stdout=subprocess.PIPE, text=True, check=True
    ).stdout.strip()


def camel_cmd(classpath: str, port: int, bootstrap: str, topic: str) -> list[str]:
    """The peer as a Java shop starts it: camel-main's Main, the YAML route from the classpath."""
    return [
        "java",
        f"-Duplink.port={port}",
        f"-Duplink.bootstrap={bootstrap}",
        f"-Duplink.topic={topic}",
        "-cp",
        classpath,
        "org.apache.camel.main.Main",
    ]


def record_count(kafka: KafkaSettings, topic: str) -> int:
    """How many records the topic holds: the sum of its partitions' end offsets (no
    transactions, no compaction, so every offset is a record). It has PARTITIONS partitions:
    create_topic made it."""
    import asyncio

    from aiokafka import TopicPartition

    from uplink.kafka import KafkaClients

    async def count() -> int:
        clients = KafkaClients(kafka)
        consumer = clients.consumer(group_id=None, isolation_level="read_uncommitted")
        await clients.start(consumer)
        try:
            partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            ends = await consumer.end_offsets(partitions)
            return sum(ends.values())
        finally:
            await consumer.stop()

    return asyncio.run(count())


def create_topic(kafka: KafkaSettings, topic: str) -> None:
    """The peer's topic, made like the ingress's messages topic (the broker creates none)."""
    import asyncio

    from uplink.settings import Topics
    from uplink.topics import ensure_topics

    topics = Topics(
        messages=topic,
        quarantine="bench.quarantine",
        media="bench.media",
        messages_partitions=PARTITIONS,
    )
    asyncio.run(ensure_topics(kafka, topics))


def profile(pid: int, seconds: int, out: Path) -> list[tuple[str, float, float]]:
    """py-spy samples of the ingress process: per function, % of samples on the stack and own."""
    subprocess.run(
        [
            shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-f",
            "raw",
            "-o",
            str(out),
            "-r",
            "200",
            "--nonblocking",
        ],
        check=True,
        capture_output=True,
    )
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        seen = set()
        for frame in stack.split(";"):
            name = frame.split(" (")[0]
            where = frame.split(" (")[1].split(":")[0] if " (" in frame else ""
            label = f"{name} ({Path(where).parent.name}/{Path(where).name})" if where else name
            if label not in seen:
                inclusive[label] += n
                seen.add(label)
        own[label] += n  # the last frame is the one running
    top = {label for label, _ in own.most_common(25)}
    return sorted(
        ((label, 100.0 * inclusive[label] / total, 100.0 * own[label] / total) for label in top),
        key=lambda row: -row[2],
    )


def java_version() -> str:
    """The first line of ``java -version``, e.g. 'openjdk version "17.0.15" 2025-04-15'."""
    out = subprocess.run(["java", "-version"], capture_output=True, text=True, check=True)
    return out.stderr.splitlines()[0].replace('"', "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="server workers, for each")
    parser.add_argument(
        "--servers",
        default="uvicorn,granian",
        help="the servers the ingress runs on, each beside its bare raw endpoint "
        "(uvicorn: raw ASGI; granian: RSGI); the bare Starlette endpoint is the baseline",
    )
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--meta", action="store_true", help="/v1/uplink against /v1/meta (1 and 10 a POST)"
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="TREE",
        help="also run the ingress of another checkout (its own .venv, else this one's), e.g. "
        "main, in the same rounds: a before/after on one machine at one time",
    )
    parser.add_argument(
        "--against-server",
        choices=["uvicorn", "granian"],
        default="uvicorn",
        help="the server the --against ingress runs on (compare it with this tree's on the same)",
    )
    parser.add_argument(
        "--peer",
        choices=["camel", "go"],
        help="also run a peer in the same rounds: camel = bench/peers/camel (Apache Camel "
        "4.22.0, camel-main with a YAML route; needs java and mvn); go = bench/peers/go "
        "(net/http + franz-go; needs go)",
    )
    parser.add_argument(
        "--peer-warmup",
        type=int,
        default=30,
        metavar="SECONDS",
        help="the peer's warm-up run before the rounds: the JVM compiles its hot paths (on this "
        "machine Camel answered 1.2k pushes/s in its first 10 s, 2.8k after 25 s)",
    )
    parser.add_argument(
        "--registry",
        action="store_true",
        help="compare the ingress with a schema registry (Confluent framing) to without",
    )
    args = parser.parse_args()
    args.load_before = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    from tests.servers.registry import LocalRegistry, RegistryServerSettings
    from uplink.broker import free_port, kafka_broker

    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        bootstrap = stack.enter_context(kafka_broker(os.environ, data_dir=Path(tmp) / "kafka"))
        registry_url = ""
        if args.registry:
            registry = LocalRegistry(RegistryServerSettings(port=free_port()))
            registry_url = stack.enter_context(registry).url
        script = lua_script(Path(tmp))
        (Path(tmp) / "bare_app.py").write_text(BARE_APP)
        (Path(tmp) / "raw_apps.py").write_text(RAW_APPS)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PYTHONPATH": f"{tmp}:{ROOT}",
            "UPLINK_TOPIC_MESSAGES": "bench.messages",
            "UPLINK_TOPIC_QUARANTINE": "bench.quarantine",
            "UPLINK_TOPIC_MEDIA": "bench.media",
            "UPLINK_TOPIC_STATUSES": "bench.statuses",
            "UPLINK_TOPIC_META_EVENTS": "bench.meta-events",
        }
        if args.meta:
            env.update(UPLINK_META_VERIFY_TOKEN="bench", UPLINK_META_APP_SECRET=META_SECRET)
            scripts = {
                "uplink": script,
                "meta1": meta_script(Path(tmp), 1, 4000),
                "meta10": meta_script(Path(tmp), 10, 400),
            }
            write_meta_results(run_meta(env, tmp, scripts, args), args)
            return
        from uplink.settings import kafka_from_env

        kafka = kafka_from_env(env)  # the bench's own clients: the ingress's settings
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        rounds: list[dict[str, dict[str, float]]] = []
        hotspots: list[tuple[str, float, float]] = []
        # 200s each endpoint answered, warm-up included: its topic must hold at least as many.
        answered: collections.Counter[str] = collections.Counter()
        classpath = camel_classpath() if args.peer == "camel" else ""
        go = go_binary() if args.peer == "go" else ""
        # A topic of this run's own: a broker given by KAFKA_BOOTSTRAP_SERVERS may hold earlier
        # runs' records, and the check below counts the topic's records.
        peer_topic = f"bench.{args.peer}.{int(time.time())}"
        servers_run = args.servers.split(",")
        try:
            ingress = "ingress.app:app_from_env"
            plain: list[tuple[str, str, bool, Path | None, dict[str, str]]] = [
                ("bare", "bare_app:app", False, None, env)
            ]
            if "uvicorn" in servers_run:
                plain += [
                    ("bare-asgi", "raw_apps:asgi", False, None, env),
                    ("ingress", ingress, True, None, env),
                ]
            if "granian" in servers_run:
                plain += [
                    ("bare-rsgi", "raw_apps:rsgi", False, None, env),
                    ("ingress-granian", "ingress.rsgi:app_from_env", True, None, env),
                ]
            candidates: list[tuple[str, str, bool, Path | None, dict[str, str]]] = (
                plain
                if not args.registry
                else [
                    (
                        "ingress",
                        ingress,
                        True,
                        None,
                        {**env, "UPLINK_TOPIC_MESSAGES": "bench.plain"},
                    ),
                    (
                        "registry",
                        ingress,
                        True,
                        None,
                        {
                            **env,
                            "UPLINK_TOPIC_MESSAGES": "bench.confluent",
                            "UPLINK_SCHEMA_REGISTRY_URL": registry_url,
                        },
                    ),
                ]
            )
            if args.against is not None:
                target = (
                    ingress if args.against_server == "uvicorn" else "ingress.rsgi:app_from_env"
                )
                candidates.append(("against", target, True, args.against, env))
            for name, target, factory, tree, server_env in candidates:
                port = free_port()
                python, path = sys.executable, ROOT
                if tree is not None:
                    path = tree.resolve()
                    if (path / ".venv" / "bin" / "python").exists():
                        python = str(path / ".venv" / "bin" / "python")
                on_granian = name in ("bare-rsgi", "ingress-granian") or (
                    name == "against" and args.against_server == "granian"
                )
                run = granian_cmd if on_granian else uvicorn_cmd
                process = subprocess.Popen(
                    run(target, port, factory, args.workers, python),
                    env={**server_env, "PYTHONPATH": f"{tmp}:{path}"},
                    cwd=tmp,
                )
                servers[name] = (process, f"http://127.0.0.1:{port}")
                wait_http(f"{servers[name][1]}/readyz")
                warm = wrk(servers[name][1], script, 3, args.connections)  # warm-up
                answered[name] += int(warm["requests"] - warm["non2xx"])
            if args.peer == "camel":
                create_topic(kafka, peer_topic)
                port = free_port()
                process = subprocess.Popen(
                    camel_cmd(classpath, port, bootstrap, peer_topic), cwd=tmp
                )
                servers["camel"] = (process, f"http://127.0.0.1:{port}")
                wait_http(f"{servers['camel'][1]}/readyz")
                warm = wrk(servers["camel"][1], script, args.peer_warmup, args.connections)
                answered["camel"] += int(warm["requests"] - warm["non2xx"])
            if args.peer == "go":
                create_topic(kafka, peer_topic)
                port = free_port()
                process = subprocess.Popen(
                    [
                        go,
                        "-listen",
                        f"127.0.0.1:{port}",
                        "-bootstrap",
                        bootstrap,
                        "-topic",
                        peer_topic,
                    ],
                    cwd=tmp,
                )
                servers["go"] = (process, f"http://127.0.0.1:{port}")
                wait_http(f"{servers['go'][1]}/readyz")
                warm = wrk(servers["go"][1], script, 3, args.connections)
                answered["go"] += int(warm["requests"] - warm["non2xx"])
            # Alternate them, several rounds: the machine is shared and drifts over a minute.
            # Each round reverses the order of the one before, so a drift favours none.
            for number in range(args.rounds):
                measured = {}
                order = list(servers.items())
                for name, (process, base) in order if number % 2 == 0 else reversed(order):
                    cpu = cpu_seconds(process.pid)
                    with PeakRss(process.pid) as rss:
                        measured[name] = wrk(base, script, args.duration, args.connections)
                    # CPU per request: steadier than a rate while others share the machine.
                    used = cpu_seconds(process.pid) - cpu
                    measured[name]["cpu_us"] = 1e6 * used / max(measured[name]["requests"], 1)
                    measured[name]["rss_mib"] = rss.peak / 2**20
                    answered[name] += int(measured[name]["requests"] - measured[name]["non2xx"])
                    print(name, json.dumps(measured[name]), flush=True)
                rounds.append(measured)
            checks = {}
            if args.peer is not None:
                # The answers were real: a 200 is a record in the topic. wrk stops with requests
                # in flight, so the topic may hold up to a connection's worth more per wrk run.
                records = record_count(kafka, peer_topic)
                runs = args.rounds + 1
                checks[args.peer] = (records, answered[args.peer], runs * args.connections)
                if not 0 <= records - answered[args.peer] <= runs * args.connections:
                    sys.exit(
                        f"{args.peer}: {answered[args.peer]} 200s but {records} records in "
                        f"{peer_topic}"
                    )
            if args.profile and args.workers == 1:  # py-spy follows the one server process
                process, base = servers["ingress"]
                load = subprocess.Popen(
                    [
                        "wrk",
                        "-t1",
                        f"-c{args.connections}",
                        f"-d{args.duration + 2}s",
                        "-s",
                        str(script),
                        base,
                    ],
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(1)
                hotspots = profile(process.pid, args.duration - 2, Path(tmp) / "profile.txt")
                load.wait()
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(30)
    if args.registry:
        write_registry_results(rounds, args)
    else:
        write_results(rounds, hotspots, checks, args)


def rounds_table(
    rounds: list[dict[str, dict[str, float]]], what: str, labels: dict[str, str]
) -> list[str]:
    """The rounds as a Markdown table, one row per server and round."""
    lines = [
        f"| round | {what} | requests/s | p50 ms | p99 ms | max ms | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            errors = int(r["connect"] + r["read"] + r["write"] + r["timeout"])
            lines.append(
                f"| {number} | {labels[name]} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {int(r['non2xx'])} | {errors} |"
            )
    return lines


def write_registry_results(
    rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace
) -> None:
    ratios = [r["registry"]["rps"] / r["ingress"]["rps"] for r in rounds]
    ratio = statistics.median(ratios)
    p50 = [r["registry"]["p50_ms"] / r["ingress"]["p50_ms"] for r in rounds]
    lines = [
        run_line("; broker, registry (Apicurio 3.3.3), servers and wrk all on this machine"),
        f"Load: wrk -t1 -c{args.connections} -d{args.duration}s per run, {args.rounds} rounds "
        "alternating (each round in the reverse order of the one before) the ingress without a "
        "registry (single-object encoding) and with "
        "`UPLINK_SCHEMA_REGISTRY_URL` (schema registered at start-up, Confluent framing), each on "
        "its own topic; the spec's 13 example pushes in rotation, unique messageIds; uvicorn, "
        f"uvloop, httptools, {args.workers} worker(s) each, no access log.",
        "",
        *rounds_table(
            rounds,
            "ingress",
            {"ingress": "single-object (no registry)", "registry": "Confluent (registry)"},
        ),
    ]
    lines += [
        "",
        f"**Throughput with the registry / without: {ratio:.1%}** (median of "
        f"{', '.join(f'{r:.1%}' for r in ratios)}); p50 latency with / without: median "
        f"{statistics.median(p50):.2f}x. The registry is asked once, at start-up: a push's "
        "work differs only in the 5-byte header its encoder was compiled with.",
        "",
    ]
    write_run(
        "Ingress with the schema registry",
        figure=f"Confluent framing at {100 * ratio:.1f} % of single-object throughput "
        f"(median of {len(ratios)}, range {100 * min(ratios):.1f} to {100 * max(ratios):.1f} %)",
        bar="no measurable cost (within the rounds' noise)",
        met=min(ratios) <= 1.0 <= max(ratios) or ratio >= 0.97,
        command=command(),
        section="\n".join(lines),
    )
    print("\n".join(lines))


def medians(rounds: list[dict[str, dict[str, float]]], name: str) -> dict[str, float]:
    """An endpoint's median over the rounds of each figure."""
    return {
        figure: statistics.median(r[name][figure] for r in rounds)
        for figure in ("rps", "p50_ms", "p99_ms", "rss_mib", "cpu_us")
    }


def run_meta(
    env: dict[str, str], tmp: str, scripts: dict[str, Path], args: argparse.Namespace
) -> list[dict[str, dict[str, float]]]:
    """One ingress; each round runs every script against it in turn."""
    from uplink.broker import free_port

    port = free_port()
    process = subprocess.Popen(
        uvicorn_cmd("ingress.app:app_from_env", port, True, args.workers), env=env, cwd=tmp
    )
    base = f"http://127.0.0.1:{port}"
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        wait_http(f"{base}/readyz")
        for script in scripts.values():
            wrk(base, script, 3, args.connections)  # warm-up, and the topics' metadata
        for number in range(args.rounds):
            measured = {}
            # Each round in another order: a drift of the machine favours none of them.
            names = list(scripts)[number % len(scripts) :] + list(scripts)[: number % len(scripts)]
            for name in names:
                measured[name] = wrk(base, scripts[name], args.duration, args.connections)
                print(name, json.dumps(measured[name]), flush=True)
            rounds.append(measured)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    return rounds


def write_meta_results(rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    per_post = {"uplink": 1, "meta1": 1, "meta10": 10}
    labels = {
        "uplink": "POST /v1/uplink (a provider push)",
        "meta1": "POST /v1/meta, 1 message",
        "meta10": "POST /v1/meta, 10 messages",
    }
    ratios = {
        name: [r[name]["rps"] * per_post[name] / r["uplink"]["rps"] for r in rounds]
        for name in ("meta1", "meta10")
    }
    lines = [
        run_line("; broker, ingress and wrk all on this machine"),
        f"Load: wrk -t1 -c{args.connections} -d{args.duration}s per run, {args.rounds} rounds, "
        "each running the three in turn (in a rotated order) against one ingress process "
        "(uvicorn, uvloop, httptools, no access log). /v1/uplink: the spec's 13 example pushes "
        "in rotation, unique messageIds; /v1/meta: pre-signed POSTs of Meta's examples (text, "
        "image, button reply, location, reaction, contacts), unique wamids, 4,000 POSTs of 1 and "
        "400 of 10 in rotation. Every message is one record, acknowledged (acks=all) before the "
        "200.",
        "",
        "| round | endpoint | POSTs/s | messages/s | p50 ms | p99 ms | max ms | non-2xx | "
        "socket errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            errors = int(r["connect"] + r["read"] + r["write"] + r["timeout"])
            lines.append(
                f"| {number} | {labels[name]} | {r['rps']:.0f} | {r['rps'] * per_post[name]:.0f} "
                f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} | "
                f"{int(r['non2xx'])} | {errors} |"
            )

    def summary(name: str) -> str:
        values = ratios[name]
        return (
            f"{statistics.median(values):.1%} (median of {len(values)}, range "
            f"{min(values):.1%} to {max(values):.1%})"
        )

    lines += [
        "",
        f"**Messages/s of /v1/meta against /v1/uplink's pushes/s: 1 a POST {summary('meta1')}; "
        f"10 a POST {summary('meta10')}.**",
        "",
    ]
    section = "\n".join(lines)
    write_run(
        "Meta webhook load",
        figure=f"/v1/meta at {summary('meta1')} of /v1/uplink's messages/s with 1 message a "
        f"POST, {summary('meta10')} with 10, at {args.connections} connections",
        command=command(),
        section=section,
    )
    print(section)


def ratio_text(values: list[float]) -> str:
    return (
        f"{statistics.median(values):.1%} (median of {len(values)}, range {min(values):.1%} to "
        f"{max(values):.1%})"
    )


def write_results(
    rounds: list[dict[str, dict[str, float]]],
    hotspots: list[tuple[str, float, float]],
    checks: dict[str, tuple[int, int, int]],
    args: argparse.Namespace,
) -> None:
    names = list(rounds[0])
    ingresses = [n for n in ("ingress", "ingress-granian") if n in names]
    # The faster of the ingress's servers, by its median pushes/s, is the one the bars judge.
    best = max(ingresses, key=lambda n: statistics.median(r[n]["rps"] for r in rounds))
    ratios = [r[best]["rps"] / r["bare"]["rps"] for r in rounds]
    ratio = statistics.median(ratios)
    lines = [
        run_line("; broker, servers and wrk all on this machine"),
        f"Load: wrk -t1 -c{args.connections} -d{args.duration}s per run, {args.rounds} rounds "
        f"alternating {', '.join(names)} (each round in the reverse order of the one before); "
        "the spec's 13 example pushes in rotation, unique messageIds, 50,000 senders; uvicorn "
        "(uvloop, httptools) or granian (RSGI, uvloop, HTTP/1), "
        f"{args.workers} worker(s) each, no access log. RSS: the largest resident memory of the "
        "server's processes during its run (sampled every 0.2 s). CPU µs a request: the server's "
        f"processes' CPU time over the requests answered. Load average before the rounds: "
        f"{args.load_before}, after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}.",
    ]
    if args.peer == "camel":
        lines += [
            "",
            "The peer (bench/peers/camel): Apache Camel 4.22.0 as the HTTP → Kafka edge a Java "
            "shop would build: camel-main started with `org.apache.camel.main.Main`, a YAML route "
            "(camel-yaml-dsl), platform-http on camel-platform-http-vertx, camel-kafka (kafka-"
            "clients 4.3.1) with acks=all and idempotence, the record keyed "
            "`businessPhone:from.phone` from the body parsed once with Jackson, 200 "
            '`{"messageId": ...}` once the broker has acknowledged. It forwards the body as it '
            "came (no validation, no Avro, no quarantine) to a topic of its own with the same "
            f"{PARTITIONS} partitions, on the same broker. JVM: the default `java` "
            f"({java_version()}), default heap settings; warmed up with a {args.peer_warmup} s "
            "wrk run before the rounds (the others: 3 s).",
        ]
    if args.peer == "go":
        lines += [
            "",
            "The peer (bench/peers/go): the HTTP → Kafka edge a Go shop would write: net/http "
            "and franz-go (v1.22.3), acks=all, idempotent, linger 0, the record keyed "
            "`businessPhone:from.phone` (encoding/json into a small struct, murmur2 partitioning "
            'like the Java client), 200 `{"messageId": ...}` after the ack, 503 otherwise. It '
            "forwards the body as it came (no validation, no Avro, no quarantine) to a topic of "
            f"its own with the same {PARTITIONS} partitions, on the same broker; built with "
            f"{go_version()} (GOMAXPROCS default: both cores).",
        ]
    lines += [
        "",
        "| round | endpoint | requests/s | CPU µs a request | p50 ms | p99 ms | max ms "
        "| RSS MiB | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, measured in enumerate(rounds, 1):
        for name, r in measured.items():
            errors = int(r["connect"] + r["read"] + r["write"] + r["timeout"])
            label = LABELS.get(name, f"uplink ingress of {args.against}")
            lines.append(
                f"| {number} | {label} | {r['rps']:.0f} | {r['cpu_us']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['rss_mib']:.0f} | "
                f"{int(r['non2xx'])} | {errors} |"
            )
    lines += [
        "",
        "| endpoint (median of the rounds) | requests/s | p50 ms | p99 ms | RSS MiB "
        "| CPU µs a request |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        m = medians(rounds, name)
        lines.append(
            f"| {LABELS.get(name, f'uplink ingress of {args.against}')} | {m['rps']:.0f} | "
            f"{m['p50_ms']:.2f} | "
            f"{m['p99_ms']:.2f} | {m['rss_mib']:.0f} | {m['cpu_us']:.0f} |"
        )
    lines += ["", f"**{LABELS[best]} / bare Starlette: {ratio_text(ratios)}** (bar: {BAR:.0%})."]
    for ingress_name, raw in (("ingress", "bare-asgi"), ("ingress-granian", "bare-rsgi")):
        if ingress_name in names and raw in names:
            own = [r[ingress_name]["rps"] / r[raw]["rps"] for r in rounds]
            lines.append(f"{LABELS[ingress_name]} / {LABELS[raw]}: {ratio_text(own)}.")
    if "ingress" in names and "ingress-granian" in names:
        versus = [r["ingress-granian"]["rps"] / r["ingress"]["rps"] for r in rounds]
        lines.append(f"The ingress on granian / on uvicorn: {ratio_text(versus)}.")
    lines.append("")
    if args.against is not None:
        against = [r["against"]["rps"] / r["bare"]["rps"] for r in rounds]
        lines += [
            f"The ingress of {args.against} (on {args.against_server}), in the same rounds: "
            f"{ratio_text(against)} of the bare endpoint; CPU µs a push "
            f"{medians(rounds, 'against')['cpu_us']:.0f}.",
            "",
        ]
    peer_figure = ""
    if args.peer is not None:
        peer = medians(rounds, args.peer)
        records, answered, slack = checks[args.peer]
        for ingress_name in ingresses:
            versus = [r[ingress_name]["rps"] / r[args.peer]["rps"] for r in rounds]
            mine = medians(rounds, ingress_name)
            lines.append(
                f"**{LABELS[ingress_name]} / {LABELS[args.peer]}: {ratio_text(versus)}**; p99 "
                f"{mine['p99_ms']:.2f} ms against the peer's {peer['p99_ms']:.2f} ms (medians)."
            )
        lines += [
            "",
            f"The peer's answers are real: its topic holds {records:,} records for its "
            f"{answered:,} 200s (warm-up included; wrk stops with up to {slack:,} requests in "
            "flight over the runs).",
            "",
        ]
        versus = [r[best]["rps"] / r[args.peer]["rps"] for r in rounds]
        mine = medians(rounds, best)
        peer_figure = (
            f"; {LABELS[best]} at {statistics.median(versus):.0%} of the {args.peer} peer's "
            f"pushes/s ({mine['rps']:.0f} against {peer['rps']:.0f}; p99 {mine['p99_ms']:.1f} "
            f"against {peer['p99_ms']:.1f} ms), medians"
        )
    if hotspots:
        lines += [
            "Where an ingress request spends its time (py-spy at 200 Hz during a separate load "
            "run; `own` = the function itself was running, `on stack` = it or its callees; the "
            "25 functions with the most own samples):",
            "",
            "| function | own % | on stack % |",
            "|---|---|---|",
        ]
        lines += [f"| `{label}` | {mine:.1f} | {total:.1f} |" for label, total, mine in hotspots]
        lines.append("")
    section = "\n".join(lines)
    # One row and section per connection count: the bar holds at 64 and at 256.
    name = "Ingress load" if args.connections == 64 else f"Ingress load, {args.connections} conns"
    if args.workers != 1:
        name += f", {args.workers} workers"
    write_run(
        name,
        figure=f"{LABELS[best]} at {100 * ratio:.1f} % of a bare Starlette endpoint at "
        f"{args.connections} connections (median of {len(ratios)}, range "
        f"{100 * min(ratios):.1f} to {100 * max(ratios):.1f} %){peer_figure}",
        bar=f"{100 * BAR:.0f} % of the bare endpoint",
        met=ratio >= BAR,
        command=command(),
        section=section,
    )
    print(section)


def go_version() -> str:
    return subprocess.run(
        ["go", "version"], capture_output=True, text=True, check=True
    ).stdout.split()[2]


if __name__ == "__main__":
    main()
