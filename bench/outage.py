"""A broker outage of minutes under steady load: how the ingress answers, its memory, its log.

    .venv/bin/python -m bench.outage [--outage 600] [--rate 20] [--before 30] [--after 60]

Starts its own pipeline in a temporary directory: a local broker (from the jars, killed and
restarted, whatever KAFKA_BOOTSTRAP_SERVERS says), ``uplink topics``, ``uplink ingress``,
``uplink archive``, ``uplink media`` and ``uplink router`` (its rules: texts to a topic) as child
processes at the default log level (INFO), the settings at their defaults. A provider simulator
sends ``--rate`` pushes a second, each a fresh messageId (no retries: a 503'd push stays
refused, so any record of it in the topic is a copy the ingress kept).
The broker runs ``--before`` seconds, is killed (SIGKILL) for ``--outage`` seconds, is started
again, and the load goes on ``--after`` seconds more.

Measured: how fast the 503s came once the first seconds were past (the produce timeout plus the
unreachable window, plus one), the ingress's RSS (sampled every second) at the kill and at its
highest until the broker was back, each process's log lines from the kill until 15 s after the
broker was back, every push answered 200 archived once, and the records in the topic of pushes
answered 503.
Writes its row and section into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from aiokafka import TopicPartition

from bench.burst import ChildProcesses, caught_up, check_archive, end_reader, uplink
from bench.results import command, run_line, write_run
from schemas import PushCodec
from uplink.broker import BrokerSettings, LocalBroker, free_port
from uplink.kafka import KafkaClients
from uplink.settings import IngressSettings, KafkaSettings, kafka_from_env

ROOT = Path(__file__).resolve().parent.parent

BENCHMARK = "Broker outage"
TEMPLATE = orjson.loads((ROOT / "tests" / "examples" / "text.json").read_bytes())
DEFAULTS = IngressSettings()
RECOVERY = 15.0  # seconds after the broker is back that still count as the outage's log
WORKERS = ("archive", "media", "router")


@dataclass
class Push:
    message_id: str
    started: float  # monotonic
    seconds: float
    status: int


class Provider:
    """Pushes at a steady rate, each in a task of its own (a slow answer delays no other)."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.rate = rate
        self.pushes: list[Push] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            interval = 1 / self.rate
            next_at = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._push(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += interval
                try:
                    await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
                except TimeoutError:
                    pass
            await asyncio.gather(*tasks)

    async def _push(self, client: httpx.AsyncClient) -> None:
        message_id = f"outage-{uuid.uuid4().hex}"
        # 1,000 senders: conversations spread over every partition, as a site's do.
        sender = {**TEMPLATE["from"], "phone": f"9185{random.randrange(1000):07d}"}
        body = orjson.dumps({**TEMPLATE, "messageId": message_id, "from": sender})
        started = time.monotonic()
        try:
            status = (await client.post(f"{self.url}/v1/uplink", content=body)).status_code
        except httpx.HTTPError:
            status = 0
        self.pushes.append(Push(message_id, started, time.monotonic() - started, status))

    def stop(self) -> None:
        self._stop.set()


class RssSampler:
    """The ingress's resident memory (its process and children), every second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append((time.monotonic(), tree_rss(self.pid)))

    def at(self, moment: float) -> int:
        before = [rss for t, rss in self.samples if t <= moment]
        return before[-1] if before else self.samples[0][1]

    def highest(self, start: float, end: float) -> int:
        return max(rss for t, rss in self.samples if start <= t <= end)


def tree_rss(pid: int) -> int:
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
        pending += [int(c) for c in children]
    return total


def log_lines(path: Path, offset: int) -> list[str]:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()


async def topic_ids(kafka: KafkaSettings, topic: str) -> collections.Counter[str]:
    """messageIds of every record in ``topic``, counted."""
    codec = PushCodec()
    clients = KafkaClients(kafka)
    admin = clients.admin()
    await clients.start(admin)
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    consumer = end_reader(clients)
    await clients.start(consumer)
    try:
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        ids: collections.Counter[str] = collections.Counter()
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                ids.update(codec.decode(r.value)["messageId"] for r in records if r.value)
        return ids
    finally:
        await consumer.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, directory: Path) -> dict[str, object]:
    settings = BrokerSettings(
        port=free_port(), controller_port=free_port(), data_dir=directory / "kafka"
    )
    broker_log = (directory / "broker.log").open("w")
    broker = LocalBroker(settings, log_sink=broker_log)
    await asyncio.to_thread(broker.start)
    pipeline = ChildProcesses(directory)
    sampler: RssSampler | None = None
    try:
        topic = f"bench.outage.{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "UPLINK_TOPIC_MESSAGES": topic,
            "PYTHONPATH": str(ROOT),
        }
        env.pop("UPLINK_LOG_LEVEL", None)
        cli = [a for a in uplink("x") if a not in {"--log-level", "WARNING", "x"}]
        await asyncio.to_thread(
            subprocess.run,
            [*cli, "topics"],
            env=env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        port = free_port()
        ingress = pipeline.start(
            "ingress", [*cli, "ingress", "--host", "127.0.0.1", "--port", str(port)], env
        )
        group = f"bench-outage-archive-{uuid.uuid4().hex[:8]}"
        pipeline.start(
            "archive",
            # A short flush interval, to see it catch up soon after the load.
            [*cli, "archive", "--archive-dir", str(directory / "archive"), "--flush-interval", "2"],
            {**env, "UPLINK_GROUP_ID": group},
        )
        rules = directory / "rules.toml"
        rules.write_text(
            f'[default]\ndrop = true\n[[rule]]\nname = "texts"\nmatch = {{ type = "text" }}\n'
            f'actions = [{{ topic = "{topic}.texts" }}]\n'
        )
        for worker, extra in (
            ("media", {"UPLINK_MEDIA_DIR": str(directory / "media")}),
            ("router", {"UPLINK_ROUTER_RULES": str(rules)}),
        ):
            worker_group = f"bench-outage-{worker}-{uuid.uuid4().hex[:8]}"
            worker_env = {**env, **extra, "UPLINK_GROUP_ID": worker_group}
            pipeline.start(worker, [*cli, worker], worker_env)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client, asyncio.timeout(120):
            while True:
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                pipeline.check_alive()
                await asyncio.sleep(0.2)
        sampler = RssSampler(ingress.pid)
        sampler.start()
        provider = Provider(url, args.rate)
        load = asyncio.create_task(provider.run())
        await asyncio.sleep(args.before)
        pipeline.check_alive()
        logs = ("ingress", *WORKERS)
        at_kill = {name: (directory / f"{name}.log").stat().st_size for name in logs}
        await asyncio.to_thread(broker.kill)
        killed = time.monotonic()
        print(f"outage: broker killed for {args.outage}s", flush=True)
        await asyncio.sleep(args.outage)
        broker = LocalBroker(settings, log_sink=broker_log)
        await asyncio.to_thread(broker.start)
        restarted = time.monotonic()
        print(f"outage: broker back after {restarted - killed:.0f}s", flush=True)
        # The outage's log: from the kill until the processes have had time to say they are
        # back (reconnected, rejoined); what follows is their normal work.
        settle = min(RECOVERY, args.after)
        await asyncio.sleep(settle)
        outage_lines = {name: log_lines(directory / f"{name}.log", at_kill[name]) for name in logs}
        await asyncio.sleep(args.after - settle)
        provider.stop()
        await load
        ended = time.monotonic()
        pipeline.check_alive()
        try:
            await caught_up(kafka_from_env(env), topic, {"archive": group}, ended, 180)
        except RuntimeError:
            print(pipeline.tail("archive", 80), file=sys.stderr)
            raise
        sampler.stop()
        pipeline.stop_all()
        ids = await topic_ids(kafka_from_env(env), topic)
    finally:
        if sampler is not None and sampler._thread.is_alive():
            sampler.stop()
        pipeline.stop_all()
        await asyncio.to_thread(broker.stop)
        broker_log.close()

    pushes = provider.pushes
    first = killed + DEFAULTS.produce_timeout + DEFAULTS.kafka.unreachable_after + 1
    late_503 = [p.seconds for p in pushes if p.status == 503 and first <= p.started < restarted]
    ok = {p.message_id for p in pushes if p.status == 200}
    refused = {p.message_id for p in pushes if p.status == 503}
    checks = check_archive(directory / "archive", ok)
    rss_at_kill = sampler.at(killed)
    rss_high = sampler.highest(killed, restarted)
    statuses = collections.Counter(p.status for p in pushes)
    return {
        "outage_s": restarted - killed,
        "pushes": len(pushes),
        "statuses": dict(sorted(statuses.items())),
        "in_outage": sum(1 for p in pushes if killed <= p.started < restarted),
        "first_s": first - killed,
        "late_503": len(late_503),
        "p50_503": statistics.median(late_503) if late_503 else float("nan"),
        "p99_503": percentile(late_503, 0.99) if late_503 else float("nan"),
        "max_503": max(late_503) if late_503 else float("nan"),
        "max_503_first": max(
            (p.seconds for p in pushes if p.status == 503 and p.started < first), default=0.0
        ),
        "rss_at_kill": rss_at_kill,
        "rss_high": rss_high,
        "rss_growth": rss_high - rss_at_kill,
        "lines": {name: len(lines) for name, lines in outage_lines.items()},
        "copies": sum(ids[m] for m in refused),
        "refused": len(refused),
        "records": sum(ids.values()),
        "ok": len(ok),
        "archived_once": checks.archived_once,
        "archived_twice": checks.archived_twice,
        "lost": checks.lost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outage", type=float, default=600, help="seconds the broker is down")
    parser.add_argument("--rate", type=float, default=20, help="pushes a second")
    parser.add_argument("--before", type=float, default=30)
    parser.add_argument("--after", type=float, default=60)
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="uplink-outage-") as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    print(orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    if args.no_write:
        return
    write_results(args, figures)


def write_results(args: argparse.Namespace, f: dict[str, object]) -> None:
    mib = 1024 * 1024
    lines = f["lines"]
    assert isinstance(lines, dict)
    bars = {
        "503s within 0.5 s after the first seconds": float(f["max_503"]) < 0.5,  # type: ignore[arg-type]
        "ingress RSS growth under 20 MiB": int(f["rss_growth"]) < 20 * mib,  # type: ignore[call-overload]
        "under 50 log lines a process": max(lines.values()) < 50,
        "every 200 archived once": f["archived_once"] == f["ok"] and f["archived_twice"] == 0,
    }
    met = all(bars.values())
    figure = (
        f"{f['outage_s']:.0f} s outage at {args.rate:g} pushes/s: 503s after the first "
        f"{f['first_s']:.0f} s in {f['p50_503']:.3f} s median, {f['max_503']:.3f} max; RSS "
        f"+{int(f['rss_growth']) / mib:.1f} MiB; log lines "  # type: ignore[call-overload]
        f"{', '.join(f'{name} {count}' for name, count in lines.items())}; "
        f"{f['archived_once']}/{f['ok']} 200s archived once; "
        f"{f['copies']} copies of {f['refused']} 503'd pushes in the topic"
    )
    table = [
        "| measure | figure | bar | met |",
        "|---|---|---|---|",
        f"| broker down (kill → started again) | {f['outage_s']:.0f} s | — | — |",
        f"| pushes (all), during the outage | {f['pushes']}, {f['in_outage']} | — | — |",
        f"| answers by status | {f['statuses']} | — | — |",
        f"| 503s in the first {f['first_s']:.0f} s: slowest | {f['max_503_first']:.2f} s | "
        "the produce timeout | — |",
        f"| 503s after them ({f['late_503']}): p50, p99, max | {f['p50_503']:.3f}, "
        f"{f['p99_503']:.3f}, {f['max_503']:.3f} s | 0.5 s | "
        f"{'yes' if bars['503s within 0.5 s after the first seconds'] else 'no'} |",
        f"| ingress RSS at the kill → highest until back | {int(f['rss_at_kill']) / mib:.1f} → "  # type: ignore[call-overload]
        f"{int(f['rss_high']) / mib:.1f} MiB (+{int(f['rss_growth']) / mib:.1f}) | +20 MiB | "  # type: ignore[call-overload]
        f"{'yes' if bars['ingress RSS growth under 20 MiB'] else 'no'} |",
        f"| log lines from the kill until {RECOVERY:g} s after the broker was back: "
        f"{', '.join(lines)} | {', '.join(str(n) for n in lines.values())} | 50 each | "
        f"{'yes' if bars['under 50 log lines a process'] else 'no'} |",
        f"| 200s archived once (twice, lost) | {f['archived_once']} of {f['ok']} "
        f"({f['archived_twice']}, {f['lost']}) | all | "
        f"{'yes' if bars['every 200 archived once'] else 'no'} |",
        f"| records in the topic of pushes answered 503 | {f['copies']} (of {f['refused']} "
        f"503'd pushes; {f['records']} records in all) | counted | — |",
    ]
    section = "\n".join(
        [
            run_line(
                "; broker, ingress, the three workers and the provider simulator all on this "
                "machine"
            ),
            "",
            f"Load: {args.rate:g} pushes/s, each a fresh messageId (a 503'd push is not retried, "
            "so its records in the topic are copies the ingress kept); the broker killed "
            f"(SIGKILL) after {args.before:g} s, started again after {args.outage:g} s, the load "
            f"{args.after:g} s more. Ingress and workers at their defaults, log level INFO "
            f"(produce timeout {DEFAULTS.produce_timeout:g} s, unreachable after "
            f"{DEFAULTS.kafka.unreachable_after:g} s, reminder every "
            f"{DEFAULTS.kafka.outage_reminder:g} s).",
            "",
            *table,
            "",
        ]
    )
    write_run(
        BENCHMARK,
        figure=figure,
        command=command(sys.argv),
        section=section,
        bar="503 < 0.5 s, RSS < +20 MiB, < 50 outage lines a process, every 200 archived once",
        met=met,
    )


if __name__ == "__main__":
    main()
