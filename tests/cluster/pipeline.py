"""The worker groups as `uplink archive|router|media` processes on the cluster, as deployed:
started, watched (none may exit), their lag measured, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import IO

import fastavro
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.consumers.crashes import committed_total, serving
from uplink.broker import free_port
from uplink.settings import Topics


class Workers:
    """One process per worker kind, each in its own group."""

    def __init__(self, bootstrap: str, topics: Topics, root: Path, kinds: tuple[str, ...]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.root = root
        self.kinds = kinds
        suffix = uuid.uuid4().hex[:8]
        self.groups = {kind: f"{kind}-{suffix}" for kind in kinds}
        self.routed = f"{topics.messages}.routed"
        self.archive_dir = root / "archive"
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._logs: list[IO[bytes]] = []

    def _command(self, kind: str) -> list[str]:
        base = [sys.executable, "-m", "uplink.cli.main", kind]
        if kind == "archive":
            return [*base, "--archive-dir", str(self.archive_dir), "--flush-interval", "1"]
        if kind == "media":
            return [*base, "--media-dir", str(self.root / "media")]
        rules = self.root / "rules.toml"
        rules.write_text(
            f'[default]\ntopic = "{self.routed}"\n'
            f'[[rule]]\nname = "all"\nmatch = {{}}\nactions = [{{ topic = "{self.routed}" }}]\n'
        )
        return [*base, "--rules", str(rules)]

    async def start(self) -> None:
        topics = self.topics
        for kind in self.kinds:
            port = free_port()
            env = {
                **os.environ,
                "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "UPLINK_TOPIC_MESSAGES": topics.messages,
                "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
                "UPLINK_TOPIC_MEDIA": topics.media,
                "UPLINK_TOPIC_DLQ": f"{topics.messages}.{{worker}}.dlq",
                "UPLINK_TOPIC_ROUTER_DELAY": f"{topics.messages}.delay.{{step}}",
                "UPLINK_MESSAGES_PARTITIONS": str(topics.messages_partitions),
                "UPLINK_TOPIC_PARTITIONS": str(topics.partitions),
                "UPLINK_REPLICATION_FACTOR": str(topics.replication_factor),
                "UPLINK_GROUP_ID": self.groups[kind],
                "UPLINK_SESSION_TIMEOUT": "6",
                "UPLINK_METRICS_PORT": str(port),
            }
            log = (self.root / f"{kind}.log").open("wb")
            self._logs.append(log)
            self._processes[kind] = await asyncio.create_subprocess_exec(
                *self._command(kind), env=env, stderr=log, stdout=log
            )
            async with asyncio.timeout(90):
                await serving(f"http://127.0.0.1:{port}/metrics")

    def exited(self) -> dict[str, int]:
        """The workers that exited, with their codes (none should)."""
        return {
            kind: process.returncode
            for kind, process in self._processes.items()
            if process.returncode is not None
        }

    def log(self, kind: str) -> str:
        return (self.root / f"{kind}.log").read_text(errors="replace")[-3000:]

    async def committed(self) -> dict[str, int]:
        """Per group: the sum of its committed offsets of the messages topic."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return {
                kind: await committed_total(admin, group) for kind, group in self.groups.items()
            }
        finally:
            await admin.close()

    async def drained(self) -> bool:
        """Whether every group has committed the whole topic (the end read first: it only
        grows, so a commit at or past it is the whole topic as of then)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await consumer.start()
        try:
            tps = [
                TopicPartition(self.topics.messages, p)
                for p in range(self.topics.messages_partitions)
            ]
            end = sum((await consumer.end_offsets(tps)).values())
        finally:
            await consumer.stop()
        return all(total >= end for total in (await self.committed()).values())

    async def stop(self) -> dict[str, int | None]:
        """SIGTERM every worker; their exit codes (0: drained and committed)."""
        codes: dict[str, int | None] = {}
        for process in self._processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for kind, process in self._processes.items():
            try:
                async with asyncio.timeout(60):
                    codes[kind] = await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
                codes[kind] = None
        for log in self._logs:
            log.close()
        self._logs.clear()
        return codes

    def archived(self) -> Counter[str]:
        """How many times each messageId is in the archive's files."""
        counts: Counter[str] = Counter()
        for path in sorted(self.archive_dir.rglob("*.avro")):
            with path.open("rb") as stream:
                for record in fastavro.reader(stream):  # type: ignore[arg-type]
                    counts[str(record["messageId"])] += 1  # type: ignore[index,call-overload]
        return counts
