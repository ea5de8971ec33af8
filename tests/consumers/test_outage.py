"""A broker outage as each worker process logs it: ``uplink archive``, ``media`` and ``router``
run as an operator runs them (child processes, log level INFO, their own log config) while the
broker is killed and started again. Each says it once (a WARNING), reminds, says it is back
(an INFO), and writes fewer than 50 lines over the outage, the Kafka client's included."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Reader
from tests.consumers.router.test_handler import example_raw, send_pushes
from uplink.broker import LocalBroker
from uplink.settings import KafkaSettings, Topics, WorkerSettings

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
UNREACHABLE_AFTER = 1.5
REMINDER = 10.0  # the minute of production, scaled like the outage
WORKERS = ("archive", "media", "router")
LINES_BAR = 50


class Process:
    """One ``uplink WORKER`` child process, its stderr and stdout in a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.path = log
        self._out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uplink.cli.main", *argv],
            env=env,
            cwd=ROOT,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def lines(self, since: int = 0) -> list[str]:
        return self.path.read_text(errors="replace").splitlines()[since:]

    def matching(self, text: str, since: int = 0) -> list[str]:
        return [line for line in self.lines(since) if text in line]

    async def until(self, text: str, count: int = 1, since: int = 0, timeout: float = 90) -> None:
        """Until the process has written ``text`` ``count`` times (its log is the only event it
        gives); fails at once, with its log, if it exits."""
        async with asyncio.timeout(timeout):
            while len(self.matching(text, since)) < count:
                if self.process.poll() is not None:
                    tail = "\n".join(self.lines()[-40:])
                    raise AssertionError(f"{self.name} exited {self.process.returncode}:\n{tail}")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


@pytest.fixture
def processes() -> Iterator[dict[str, Process]]:
    started: dict[str, Process] = {}
    try:
        yield started
    finally:
        for process in started.values():
            process.stop()


async def test_each_worker_logs_a_lost_cluster_once_and_under_50_lines(
    tmp_path: Path,
    topics: Topics,
    processes: dict[str, Process],
    read_records: Reader,
    own_broker: LocalBroker,
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        f'[default]\ntopic = "{topics.messages}.unmatched"\n'
        f'[[rule]]\nname = "texts"\nmatch = {{ type = "text" }}\n'
        f'actions = [{{ topic = "{topics.messages}.texts" }}]\n'
    )
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers,
        "UPLINK_TOPIC_MESSAGES": topics.messages,
        "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
        "UPLINK_TOPIC_MEDIA": topics.media,
        "UPLINK_TOPIC_STATUSES": topics.statuses,
        "UPLINK_TOPIC_META_EVENTS": topics.meta_events,
        "UPLINK_TOPIC_DLQ": f"{topics.messages}.{{worker}}.dlq",
        "UPLINK_TOPIC_REDRIVE": f"{topics.messages}.{{worker}}.redrive",
        "UPLINK_MESSAGES_PARTITIONS": str(topics.messages_partitions),
        "UPLINK_TOPIC_PARTITIONS": str(topics.partitions),
        "UPLINK_KAFKA_UNREACHABLE_AFTER": str(UNREACHABLE_AFTER),
        "UPLINK_OUTAGE_REMINDER": str(REMINDER),
        "UPLINK_LOG_LEVEL": "INFO",
        "UPLINK_ARCHIVE_DIR": str(tmp_path / "archive"),
        "UPLINK_MEDIA_DIR": str(tmp_path / "media"),
        "UPLINK_ROUTER_RULES": str(rules),
        "UPLINK_TOPIC_ROUTER_DELAY": f"{topics.messages}.delay.{{step}}",
        "PYTHONPATH": str(ROOT),
    }
    for name in WORKERS:
        argv = [name, "--flush-interval", "1"] if name == "archive" else [name]
        group = {"UPLINK_GROUP_ID": f"outage-{name}-{suffix}"}
        processes[name] = Process(name, argv, {**env, **group}, tmp_path / f"{name}.log")
    for process in processes.values():
        await process.until("assigned [TopicPartition(topic='" + topics.messages)
    worker = WorkerSettings(
        name="router",
        kafka=KafkaSettings(bootstrap_servers=own_broker.bootstrap_servers),
        topics=topics,
    )
    # Texts: the media worker has nothing to fetch (the examples' media URLs are not ours).
    await send_pushes(worker, [example_raw("text", f"before-{n}") for n in range(20)])
    texts = f"{topics.messages}.texts"
    await read_records(texts, count=20, timeout=120, bootstrap=own_broker.bootstrap_servers)

    at_kill = {name: len(p.lines()) for name, p in processes.items()}
    await asyncio.to_thread(own_broker.kill)
    for name, process in processes.items():
        await process.until("Kafka still unreachable", since=at_kill[name])
    await asyncio.to_thread(own_broker.start)
    for name, process in processes.items():
        await process.until("Kafka reachable again", since=at_kill[name])
    # Back at work: a push sent now is routed (what the workers write until then counts).
    await send_pushes(worker, [example_raw("text", "after")])
    await read_records(texts, count=21, timeout=120, bootstrap=own_broker.bootstrap_servers)
    for name, process in processes.items():
        outage = process.lines(at_kill[name])
        said = "\n".join(outage)
        assert len(outage) < LINES_BAR, f"{name}: {len(outage)} lines\n{said}"
        assert len(process.matching("Kafka unreachable:", at_kill[name])) == 1, said
        assert len(process.matching("Kafka reachable again", at_kill[name])) == 1, said
        reminders = process.matching("Kafka still unreachable", at_kill[name])
        assert "records behind the partitions' ends" in reminders[0], said
        errors = [line for line in outage if " ERROR " in line]
        assert len(errors) < 10, f"{name}: {len(errors)} ERROR lines\n{said}"
