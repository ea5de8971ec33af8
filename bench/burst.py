"""End-to-end burst: 100,000 pushes at the ingress with the broker and the workers on this machine.

    .venv/bin/python -m bench.burst [--requests 100000] [--connections 256] [--threads 2]
                                    [--workers archive,media,router] [--profile]

Starts its own pipeline in a temporary directory, each part as the deployment runs it: the broker
(local unless ``KAFKA_BOOTSTRAP_SERVERS``), ``uplink topics``, ``uplink ingress`` and the workers
as child processes of their own verbs. wrk fires the spec's 13 example pushes in rotation (fresh
messageIds, event time now, 50,000 senders), 2 % of the requests being retries of an earlier push
with the same body bytes, as the provider retries. Each wrk thread stops itself once its share
is answered, and writes down the messageId of every 200. A bare Starlette endpoint under the same
uvicorn settings takes the same burst first (the baseline, same run).

Then: the time from the burst's last answer until each worker group has committed the whole
topic, and the checks on the archive's files (every 200'd push archived exactly once, no push
archived twice, nothing lost). Writes its row and section into bench/RESULTS.md; with --profile,
where the ingress spends its time during a further burst (py-spy).

The media worker fetches each media push's ``filePath``: the pushes point at a local file server
(uvicorn, on 127.0.0.1), allowed with ``UPLINK_MEDIA_ALLOW_HOSTS=127.0.0.1``. The router gets a
copy of consumers/router/example_rules.toml with its endpoint URLs pointed at the same server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.ingress_load import BARE_APP, profile, uvicorn_cmd, wait_http
from bench.load import REPORT, cpu_seconds, lua_list, report
from bench.pushes import EXAMPLES
from bench.results import ROOT, command, run_line, write_run
from consumers.archive.replay import archived_records
from uplink.broker import free_port, kafka_broker
from uplink.kafka import KafkaClients
from uplink.settings import KafkaSettings, kafka_from_env, topics_from_env

MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
WORKERS = ("archive", "media", "router")
SHA256_NAME = re.compile(r"[0-9a-f]{64}")

# wrk script. Each thread sends its share of the requests and stops once all of them are
# answered: delay() hands out the share (a connection past it idles), response() records the
# messageId of every 200 and the count of each status, and stops the thread after the last one.
# init(args): total requests, threads, run id, output directory.
LUA = r"""
local bodies = {}
%(bodies)s
local media = {}
%(media)s
local RETRY_EVERY = %(retry_every)d
local RING = 4096

local share, run, outdir
local reserved, sent, fresh, retries, answered = 0, 0, 0, 0, 0
local ring, ring_n = {}, 0
local codes = {}
local ok
local headers = {["Content-Type"] = "application/json"}

setup = function(thread)
  threads_set = (threads_set or 0) + 1
  thread:set("thread_id", threads_set)
end

init = function(args)
  local total, nthreads = tonumber(args[1]), tonumber(args[2])
  run, outdir = args[3], args[4]
  share = math.floor(total / nthreads)
  if thread_id == 1 then share = share + total %% nthreads end
  ok = io.open(outdir .. "/ok-" .. thread_id .. ".txt", "w")
  math.randomseed(thread_id * 7919)
end

delay = function()
  if reserved < share then
    reserved = reserved + 1
    return 0
  end
  return 3600000  -- this thread's share is out: the connection idles until the thread stops
end

request = function()
  if reserved == 0 then
    -- wrk calls request() once before the run to count pipelined requests: nothing is sent
    return wrk.format("GET", "/healthz")
  end
  sent = sent + 1
  local body
  if sent %% RETRY_EVERY == 0 and ring_n > 0 then
    -- the provider retries a push: the same bytes, the same messageId
    body = ring[math.random(1, math.min(ring_n, RING))]
    retries = retries + 1
  else
    fresh = fresh + 1
    body = bodies[(fresh %% #bodies) + 1]
    body = string.gsub(body, "@ID@", run .. "-" .. thread_id .. "-" .. fresh, 1)
    -- a campaign is answered by many different people: one conversation (key) each
    body = string.gsub(body, "@PHONE@", tostring(910000000000 + (fresh %% 50000)), 1)
    body = string.gsub(body, "\"@TS@\"", tostring(os.time()), 1)
    local object = media[(fresh %% #media) + 1]
    body = string.gsub(body, "@FILE@", object[1], 1)
    body = string.gsub(body, "@SHA@", object[2], 1)
    ring_n = ring_n + 1
    ring[((ring_n - 1) %% RING) + 1] = body
  end
  return wrk.format("POST", "/v1/uplink", headers, body)
end

response = function(status, response_headers, body)
  answered = answered + 1
  codes[status] = (codes[status] or 0) + 1
  if status == 200 then
    ok:write((string.match(body, '"messageId":"([^"]*)"') or "?"), "\n")
  end
  if answered == share then
    ok:close()
    local parts = {}
    for code, count in pairs(codes) do
      parts[#parts + 1] = string.format('"%%d": %%d', code, count)
    end
    local done = io.open(outdir .. "/done-" .. thread_id .. ".json", "w")
    done:write(string.format('{"sent": %%d, "fresh": %%d, "retries": %%d, "codes": {%%s}}\n',
      sent, fresh, retries, table.concat(parts, ", ")))
    done:close()
    wrk.thread:stop()
  end
end

"""

# Media files for the media worker, and a sink for the router's HTTP endpoints.
SINK_APP = """
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

async def hook(request: Request) -> Response:
    await request.body()
    return Response(b"ok")

async def ready(request: Request) -> Response:
    return Response(b"ready")

app = Starlette(routes=[
    Route("/readyz", ready),
    Route("/hooks/{path:path}", hook, methods=["POST"]),
    Mount("/media", StaticFiles(directory=os.environ["BENCH_MEDIA_FILES"])),
])
"""


@dataclass
class Burst:
    """What one wrk burst measured."""

    label: str
    wrk: dict[str, float]
    codes: collections.Counter[int]
    sent: int
    retries: int
    ok_ids: list[str]
    seconds: float  # launch to the last answer, as seen from here
    ended: float  # time.monotonic() of the last answer
    cpu: float  # seconds of the server process's CPU time during the burst

    @property
    def cpu_us(self) -> float:
        """The server's CPU time per request, µs: less noisy on a shared machine than rates."""
        return self.cpu * 1e6 / self.sent

    @property
    def accepted_per_s(self) -> float:
        return self.codes[200] / self.seconds

    @property
    def socket_errors(self) -> int:
        w = self.wrk
        return int(w["connect"] + w["read"] + w["write"] + w["timeout"])


@dataclass
class Round:
    bare: Burst
    ingress: Burst
    catch_up: dict[str, float]


@dataclass
class Checks:
    files: int
    records: int
    ok_ids: int
    archived_once: int
    archived_twice: int  # messageIds in more than one record
    lost: int  # 200'd but not archived
    unanswered: int  # archived but never 200'd (e.g. a 503 whose record made it after all)
    dead_lettered: dict[str, int] = field(default_factory=dict)  # records in each worker's DLQ
    media_objects: int | None = None  # files in the media store named by a sha256

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.archived_twice == 0
            and self.archived_once == self.ok_ids
            and not any(self.dead_lettered.values())
        )


@dataclass
class ChildProcesses:
    """The child processes; stopped together (SIGTERM, then kill) whatever happens."""

    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, IO[bytes]] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.directory / f"{name}.log").open("wb")
        self.logs[name] = log
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        text = (self.directory / f"{name}.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, name: str, timeout: float = 60) -> int:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise RuntimeError(f"{name} did not stop within {timeout}s: killed") from None
        self.logs[name].close()
        return process.returncode

    def stop_all(self) -> None:
        for name in list(self.processes)[::-1]:
            try:
                self.stop(name)
            except RuntimeError as exc:
                print(f"burst: {exc}", file=sys.stderr)


def media_objects(directory: Path, count: int, base_url: str) -> list[tuple[str, str]]:
    """``count`` files of 8-128 KiB to serve; (filePath URL, base64 sha256) of each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(1)
    objects = []
    for n in range(count):
        data = rng.randbytes(rng.randrange(8 * 1024, 128 * 1024))
        name = f"object-{n}.bin"
        (directory / name).write_bytes(data)
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        objects.append((f"{base_url}/media/{name}", digest))
    return objects


def lua_script(directory: Path, objects: list[tuple[str, str]], retry_percent: float) -> Path:
    bodies = []
    for path in sorted(EXAMPLES.glob("*.json")):
        push = json.loads(path.read_bytes())
        push["messageId"] = "@ID@"
        push["from"]["phone"] = "@PHONE@"
        # Event time now, as live traffic has it: the examples' own timestamps are years old.
        push["timestamp"] = "@TS@"
        kind = push.get("message", {}).get("type")
        if kind in MEDIA_TYPES and kind in push["message"]:
            push["message"][kind]["filePath"] = "@FILE@"
            push["message"][kind]["sha256"] = "@SHA@"
        bodies.append(json.dumps(push, ensure_ascii=False))
    script = directory / "burst.lua"
    script.write_text(
        LUA
        % {
            "bodies": lua_list("bodies", bodies),
            "media": "\n".join(
                f"media[{i + 1}] = {{{json.dumps(u)}, {json.dumps(d)}}}"
                for i, (u, d) in enumerate(objects)
            ),
            "retry_every": round(100 / retry_percent),
        }
        + REPORT
    )
    return script


def burst(
    label: str,
    url: str,
    server: int,
    script: Path,
    directory: Path,
    args: argparse.Namespace,
    total: int,
) -> Burst:
    """One burst of ``total`` requests; returns once every request is answered. ``server`` is
    the pid of the server process, whose CPU time the burst took is measured."""
    out = directory / f"wrk-{label}"
    out.mkdir()
    run = f"{label}-{uuid.uuid4().hex[:8]}"
    argv = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", "-d3600s", "--timeout", "30s",
        "-s", str(script), url, str(total), str(args.threads), run, str(out),
    ]  # fmt: skip
    cpu_before = cpu_seconds(server)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    done = [out / f"done-{n}.json" for n in range(1, args.threads + 1)]
    deadline = started + args.burst_timeout
    while not all(path.exists() for path in done):
        if process.poll() is not None:
            raise RuntimeError(f"wrk exited with {process.returncode} before the burst ended")
        if time.monotonic() > deadline:
            process.send_signal(signal.SIGINT)
            process.communicate(timeout=30)
            raise RuntimeError(f"the {label} burst was not answered within {args.burst_timeout}s")
        time.sleep(0.005)  # polling files wrk's threads write; no event to await across processes
    ended = time.monotonic()
    cpu = cpu_seconds(server) - cpu_before
    # wrk's main thread sleeps for -d; SIGINT ends it, and it prints its summary.
    process.send_signal(signal.SIGINT)
    stdout, _ = process.communicate(timeout=60)
    stats = report(stdout)
    codes: collections.Counter[int] = collections.Counter()
    sent = retries = 0
    for path in done:
        summary = json.loads(path.read_text())
        codes.update({int(code): count for code, count in summary["codes"].items()})
        sent += summary["sent"]
        retries += summary["retries"]
    ok_ids = [
        line
        for n in range(1, args.threads + 1)
        for line in (out / f"ok-{n}.txt").read_text().splitlines()
    ]
    result = Burst(label, stats, codes, sent, retries, ok_ids, ended - started, ended, cpu)
    print(
        f"{label}: {sent} sent ({retries} retries), codes {dict(codes)}, "
        f"{result.accepted_per_s:.0f} 200/s, p50 {stats['p50_ms']:.1f} ms, "
        f"p99 {stats['p99_ms']:.1f} ms, max {stats['max_ms']:.1f} ms, "
        f"socket errors {result.socket_errors}, server CPU {result.cpu_us:.0f} µs a request",
        flush=True,
    )
    return result


async def caught_up(
    kafka: KafkaSettings, topic: str, groups: dict[str, str], since: float, timeout: float
) -> dict[str, float]:
    """Seconds from ``since`` (monotonic) until each group's committed offsets reach the end."""
    clients = KafkaClients(kafka)
    admin, consumer = clients.admin(), end_reader(clients)
    await clients.start(admin)
    await clients.start(consumer)
    try:
        (described,) = await admin.describe_topics([topic])
        partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        if not partitions:
            raise RuntimeError(f"no partitions for {topic}")
        done: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(done) < len(groups):
            # Again each time: a push answered 503 at its deadline may still reach the log.
            ends = await consumer.end_offsets(partitions)
            for name, group in groups.items():
                if name in done:
                    continue
                committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
                if all(tp in committed and committed[tp].offset >= end for tp, end in ends.items()):
                    done[name] = time.monotonic() - since
                    print(f"{name} caught up {done[name]:.2f}s after the burst", flush=True)
            if time.monotonic() > deadline:
                late = sorted(set(groups) - set(done))
                raise RuntimeError(f"{', '.join(late)} did not catch up within {timeout}s")
            await asyncio.sleep(0.05)  # polling the broker's view; there is no event to await
        return done
    finally:
        await consumer.stop()
        await admin.close()


async def record_counts(kafka: KafkaSettings, topics: dict[str, str]) -> dict[str, int]:
    """How many records each topic holds (its end offsets summed; 0 if it does not exist)."""
    clients = KafkaClients(kafka)
    admin, consumer = clients.admin(), end_reader(clients)
    await clients.start(admin)
    await clients.start(consumer)
    try:
        counts = {}
        for name, topic in topics.items():
            (described,) = await admin.describe_topics([topic])
            partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
            ends = await consumer.end_offsets(partitions) if partitions else {}
            counts[name] = sum(ends.values())
        return counts
    finally:
        await consumer.stop()
        await admin.close()


def end_reader(clients: KafkaClients) -> AIOKafkaConsumer:
    """A consumer of no group for end offsets: the log's end (read_uncommitted), not the last
    stable offset the workers' read_committed default would give."""
    return clients.consumer(group_id=None, isolation_level="read_uncommitted")


def check_archive(archive_dir: Path, ok_ids: set[str]) -> Checks:
    files = sorted(archive_dir.rglob("*.avro"))
    archived: collections.Counter[str] = collections.Counter()
    for path in files:
        archived.update(record["messageId"] for record in archived_records(path))
    return Checks(
        files=len(files),
        records=sum(archived.values()),
        ok_ids=len(ok_ids),
        archived_once=sum(1 for i in ok_ids if archived[i] == 1),
        archived_twice=sum(1 for count in archived.values() if count > 1),
        lost=sum(1 for i in ok_ids if archived[i] == 0),
        unanswered=sum(1 for i in archived if i not in ok_ids),
    )


def uplink(*verb: str) -> list[str]:
    return [sys.executable, "-m", "uplink.cli.main", "--log-level", "WARNING", *verb]


def worker_env(name: str, args: argparse.Namespace) -> dict[str, str]:
    if name == "media":  # commits every 5 s by default: too coarse to see it catch up
        return {"UPLINK_COMMIT_INTERVAL": str(args.flush_interval)}
    return {}


def worker_argv(
    name: str, directory: Path, metrics_port: int, args: argparse.Namespace
) -> list[str]:
    """The documented command line of each worker verb."""
    if name == "archive":
        return uplink(
            "archive",
            "--archive-dir", str(directory / "archive"),
            "--metrics-port", str(metrics_port),
            "--flush-interval", str(args.flush_interval),
        )  # fmt: skip
    if name == "media":
        return uplink(
            "media", "--media-dir", str(directory / "media"), "--metrics-port", str(metrics_port)
        )
    return uplink(
        "router", "--rules", str(directory / "rules.toml"), "--metrics-port", str(metrics_port)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="bare then ingress, alternating")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--retry-percent", type=float, default=2.0)
    parser.add_argument("--warmup", type=int, default=2_000, help="requests before the burst")
    parser.add_argument(
        "--workers", default=",".join(WORKERS), help="comma-separated: archive,media,router"
    )
    parser.add_argument(
        "--flush-interval", type=float, default=1.0, help="archive --flush-interval, and the "
        "media worker's UPLINK_COMMIT_INTERVAL: how often a caught-up group commits (the "
        "router keeps its own, 0.5 s)",
    )  # fmt: skip
    parser.add_argument("--media-objects", type=int, default=256, help="distinct media files")
    parser.add_argument("--burst-timeout", type=float, default=600)
    parser.add_argument("--catch-up-timeout", type=float, default=900)
    parser.add_argument("--profile", action="store_true", help="py-spy during a further burst")
    parser.add_argument("--profile-seconds", type=int, default=5)
    parser.add_argument("--profile-out", type=Path, help="keep py-spy's raw samples here")
    parser.add_argument("--no-results", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    workers = [w for w in args.workers.split(",") if w]
    if unknown := set(workers) - set(WORKERS):
        sys.exit(f"--workers: unknown {', '.join(sorted(unknown))}")
    if "archive" not in workers:
        sys.exit("--workers: the archive is needed for the checks")
    if args.media_objects < 1 or args.requests < args.threads or args.warmup < args.threads:
        sys.exit("--media-objects must be >= 1, --requests and --warmup >= --threads")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    run = uuid.uuid4().hex[:8]
    with (
        tempfile.TemporaryDirectory(prefix="uplink-burst-") as tmp,
        kafka_broker(os.environ, data_dir=Path(tmp) / "kafka") as bootstrap,
    ):
        directory = Path(tmp)
        sink_port = free_port()
        sink = f"http://127.0.0.1:{sink_port}"
        objects = media_objects(directory / "files", args.media_objects, sink)
        script = lua_script(directory, objects, args.retry_percent)
        (directory / "bare_app.py").write_text(BARE_APP)
        (directory / "sink_app.py").write_text(SINK_APP)
        if "router" in workers:
            # The router's rules as shipped, with the endpoints pointed at the local sink.
            rules = (ROOT / "consumers/router/example_rules.toml").read_text()
            (directory / "rules.toml").write_text(
                re.sub(r'url = "https?://[^/"]+', f'url = "{sink}', rules)
            )
        topic = f"bench.burst.{run}"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PYTHONPATH": f"{tmp}:{ROOT}",
            "UPLINK_TOPIC_MESSAGES": topic,
            # The media worker refuses loopback addresses unless the host is allowed.
            "UPLINK_MEDIA_ALLOW_HOSTS": "127.0.0.1",
            "UPLINK_SECRET_SUPPORT_DESK": "bench-secret",
            "BENCH_MEDIA_FILES": str(directory / "files"),
        }
        subprocess.run(uplink("topics"), env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        kafka = kafka_from_env(env)  # the bench's own clients: the pipeline's settings
        dlqs = {name: topics_from_env(env).dlq(name) for name in workers}
        dlq_before = asyncio.run(record_counts(kafka, dlqs))
        pipeline = ChildProcesses(directory)
        groups = {name: f"bench-{name}-{run}" for name in workers}
        try:
            ingress_port, bare_port = free_port(), free_port()
            ingress = pipeline.start(
                "ingress",
                uplink("ingress", "--host", "127.0.0.1", "--port", str(ingress_port)),
                env,
            )
            bare_pid = pipeline.start(
                "bare", uvicorn_cmd("bare_app:app", bare_port, False, 1), env
            ).pid
            if "media" in workers or "router" in workers:
                pipeline.start("sink", uvicorn_cmd("sink_app:app", sink_port, False, 1), env)
                wait_http(f"{sink}/readyz")
            for name in workers:
                pipeline.start(
                    name,
                    worker_argv(name, directory, free_port(), args),
                    {**env, "UPLINK_GROUP_ID": groups[name], **worker_env(name, args)},
                )
            ingress_url = f"http://127.0.0.1:{ingress_port}"
            bare_url = f"http://127.0.0.1:{bare_port}"
            wait_http(f"{ingress_url}/readyz")
            wait_http(f"{bare_url}/readyz")
            pipeline.check_alive()

            # Warm-up: both servers, and every worker group has joined and read it all.
            burst("bare-warmup", bare_url, bare_pid, script, directory, args, args.warmup)
            warmup = burst("warmup", ingress_url, ingress.pid, script, directory, args, args.warmup)
            asyncio.run(caught_up(kafka, topic, groups, warmup.ended, args.catch_up_timeout))
            pipeline.check_alive()

            # Alternating rounds: the machine is shared, and drifts over a minute.
            rounds: list[Round] = []
            ok_ids = set(warmup.ok_ids)
            for number in range(1, args.rounds + 1):
                bare = burst(
                    f"bare-{number}", bare_url, bare_pid, script, directory, args, args.requests
                )
                measured = burst(
                    f"ingress-{number}",
                    ingress_url,
                    ingress.pid,
                    script,
                    directory,
                    args,
                    args.requests,
                )
                catch_up = asyncio.run(
                    caught_up(kafka, topic, groups, measured.ended, args.catch_up_timeout)
                )
                rounds.append(Round(bare, measured, catch_up))
                ok_ids |= set(measured.ok_ids)
                pipeline.check_alive()
            hotspots: list[tuple[str, float, float]] = []
            if args.profile:
                hotspots, profiled = profile_burst(
                    ingress.pid, ingress_url, script, directory, args
                )
                ok_ids |= set(profiled.ok_ids)
            # SIGTERM: the archive renames and commits whatever is open; its exit status counts.
            for name in workers:
                code = pipeline.stop(name)
                if code != 0:
                    raise RuntimeError(f"{name} exited with {code}:\n{pipeline.tail(name)}")
            checks = check_archive(directory / "archive", ok_ids)
            after = asyncio.run(record_counts(kafka, dlqs))
            checks.dead_lettered = {name: after[name] - dlq_before[name] for name in workers}
            if "media" in workers:
                checks.media_objects = sum(
                    1
                    for path in (directory / "media").rglob("*")
                    if SHA256_NAME.fullmatch(path.name)
                )
            print(checks, "passed" if checks.passed else "FAILED", flush=True)
        finally:
            pipeline.stop_all()
    if not args.no_results:
        write_results(args, workers, rounds, checks, hotspots)
    if not checks.passed:
        sys.exit("burst: the archive checks failed")


def profile_burst(
    pid: int, url: str, script: Path, directory: Path, args: argparse.Namespace
) -> tuple[list[tuple[str, float, float]], Burst]:
    """py-spy on the ingress during a further burst (not the measured one: sampling costs CPU)."""
    result: list[tuple[str, float, float]] = []
    out = directory / "profile.txt"

    def sample() -> None:
        time.sleep(1)  # past the connection set-up
        result.extend(profile(pid, args.profile_seconds, out))

    sampler = threading.Thread(target=sample)
    sampler.start()
    profiled = burst("profiled", url, pid, script, directory, args, args.requests)
    sampler.join()
    if args.profile_out:
        shutil.copyfile(out, args.profile_out)
    for label, total, mine in result:
        print(f"{mine:5.1f} {total:5.1f}  {label}")
    return result, profiled


def write_results(
    args: argparse.Namespace,
    workers: list[str],
    rounds: list[Round],
    checks: Checks,
    hotspots: list[tuple[str, float, float]],
) -> None:
    ratios = [r.ingress.accepted_per_s / r.bare.accepted_per_s for r in rounds]
    accepted = statistics.median(r.ingress.accepted_per_s for r in rounds)
    shed = sum(r.ingress.codes[503] for r in rounds)
    sent = sum(r.ingress.sent for r in rounds)
    lines = [
        run_line(
            f"; the broker, the ingress, the workers ({', '.join(workers)}) and wrk all on "
            "this machine"
        ),
        f"Load: {args.rounds} rounds, each a burst of {args.requests:,} requests at a bare "
        "Starlette endpoint (the baseline: reads the body, answers 200), then the same at the "
        f"ingress; wrk -t{args.threads} -c{args.connections} (each "
        "thread stops once its share is answered); the spec's 13 example pushes in rotation, "
        f"fresh messageIds, event time now, 50,000 senders, {args.retry_percent:g} % of the "
        "requests retries of an earlier push (same bytes). One uvicorn worker (uvloop, "
        "httptools) each for the ingress and the baseline. Archive "
        f"`--flush-interval {args.flush_interval:g}` (a caught-up archive commits that often). "
        "`caught up`: seconds from the burst's last answer until every partition's committed "
        "offset of each worker group is at the log end.",
        "",
        "| round | endpoint | requests | 200 | 503 | other | socket errors | s | 200/s | "
        "p50 ms | p99 ms | max ms | server CPU µs/request | caught up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(rounds, 1):
        for label, b in (("bare Starlette", r.bare), ("uplink ingress", r.ingress)):
            other = sum(n for code, n in b.codes.items() if code not in (200, 503))
            caught = (
                ", ".join(f"{name} {seconds:.1f} s" for name, seconds in r.catch_up.items())
                if b is r.ingress
                else ""
            )
            lines.append(
                f"| {number} | {label} | {b.sent:,} | {b.codes[200]:,} | {b.codes[503]:,} | "
                f"{other} | {b.socket_errors} | {b.seconds:.2f} | {b.accepted_per_s:,.0f} | "
                f"{b.wrk['p50_ms']:.1f} | {b.wrk['p99_ms']:.1f} | {b.wrk['max_ms']:.1f} | "
                f"{b.cpu_us:.0f} | {caught} |"
            )
    catch_up = {
        name: statistics.median(r.catch_up[name] for r in rounds) for name in rounds[0].catch_up
    }
    lines += [
        "",
        f"**Accepted pushes/s: {accepted:,.0f} (median), {statistics.median(ratios):.1%} of the "
        f"bare endpoint** (median of {', '.join(f'{x:.1%}' for x in ratios)}); "
        f"{shed:,} of {sent:,} requests shed (503). Server CPU time a request (median): "
        f"ingress {statistics.median(r.ingress.cpu_us for r in rounds):.0f} µs, bare "
        f"{statistics.median(r.bare.cpu_us for r in rounds):.0f} µs. Caught up (median): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in catch_up.items())
        + ".",
        "",
        f"Checks over the archive's {checks.files:,} files ({checks.records:,} records: every "
        "burst's, the warm-up's and the profiled one's included):",
        "",
        "| check | result |",
        "|---|---|",
        f"| distinct messageIds answered 200 | {checks.ok_ids:,} |",
        f"| of these, archived exactly once | {checks.archived_once:,} |",
        f"| messageIds archived more than once | {checks.archived_twice} |",
        f"| answered 200 and not archived (lost) | {checks.lost} |",
        f"| archived without a 200 | {checks.unanswered} |",
        *(
            f"| records in the {name} DLQ | {count} |"
            for name, count in checks.dead_lettered.items()
        ),
        *(
            [
                f"| objects in the media store (of {args.media_objects} distinct) | "
                f"{checks.media_objects} |"
            ]
            if checks.media_objects is not None
            else []
        ),
        "",
        f"**Checks: {'passed' if checks.passed else 'FAILED'}.**",
        "",
    ]
    if hotspots:
        lines += [
            "Where the ingress spends its time during a further burst of the same load (py-spy, "
            "200 Hz, non-blocking; `own`: the function itself was running, `on stack`: it or its "
            "callees; the 25 functions with the most own samples):",
            "",
            "| function | own % | on stack % |",
            "|---|---|---|",
        ]
        lines += [f"| `{label}` | {mine:.1f} | {total:.1f} |" for label, total, mine in hotspots]
        lines.append("")
    section = "\n".join(lines)
    write_run(
        "End-to-end burst",
        figure=f"ingress at {100 * statistics.median(ratios):.1f} % of a bare Starlette endpoint "
        f"(median of {len(rounds)}; {accepted:,.0f} pushes/s), workers: {', '.join(workers)}, "
        f"{shed:,} shed",
        bar="checks pass: every 200 archived once, none lost, DLQs empty",
        met=checks.passed,
        command=command(),
        section=section,
    )
    print(section)


if __name__ == "__main__":
    main()
