"""The documentation's recipes hold: the runbook's re-drive recipe runs as written (kcat copies
dead letters byte for byte, keys unchanged, each into the partition uplink's own producers would
choose for its key), and the suggested alert rules name metrics uplink serves."""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from consumers.media.metrics import MediaMetrics
from consumers.router.metrics import RouterMetrics
from consumers.runtime.metrics import WorkerMetrics
from ingress.metrics import IngressMetrics
from tests.conftest import Reader

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNBOOK = DOCS / "runbook.md"
ALERTS = ROOT / "deploy" / "helm" / "uplink" / "files" / "alerts.yaml"  # shown in operations.md
MARKER = "<!-- tests/test_runbook.py runs the next block as written -->"


def redrive_recipe() -> str:
    text = RUNBOOK.read_text()
    assert MARKER in text, "the runbook's re-drive recipe lost its marker"
    found = re.search(r"```sh\n(.*?)```", text[text.index(MARKER) :], re.DOTALL)
    assert found
    return found.group(1)


async def test_the_redrive_recipe_copies_dead_letters_exactly(
    kafka_bootstrap: str, read_records: Reader
) -> None:
    assert shutil.which("kcat"), "kcat missing: apt-get install kcat (scripts/test does)"
    suffix = uuid.uuid4().hex[:10]
    source, target = f"test.router.dlq.{suffix}", f"test.router.redrive.{suffix}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(source, 2, 1), NewTopic(target, 5, 1)])
    finally:
        await admin.close()

    rng = random.Random(7)
    # Values with every byte a shell or a line-oriented tool could trip on: newlines, tabs, NULs.
    letters = [
        (f"1555000{i:04d}:4477{i % 3}".encode(), b"\xc3\x01" + rng.randbytes(rng.randint(1, 300)))
        for i in range(12)
    ] + [(b"15550001234:447700", b"\n\t\x00 line\r\n")]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in letters:
            await producer.send_and_wait(
                source, value, key=key, headers=[("uplink-dlq-reason", b"test")]
            )
    finally:
        await producer.stop()

    env = {**os.environ, "BROKER": kafka_bootstrap, "FROM": source, "TO": target}
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        redrive_recipe(),
        env=env,
        stderr=subprocess.PIPE,
    )
    async with asyncio.timeout(180):
        _, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()

    copied = await read_records(target, count=len(letters))
    assert sorted((r.key, r.value) for r in copied) == sorted(letters)
    partitions = list(range(5))
    for record in copied:
        assert record.partition == DefaultPartitioner()(record.key, partitions, partitions)


def family(sample: str) -> str:
    """A metric family's name from one of its sample names."""
    return re.sub(r"_(total|bucket|sum|count)$", "", sample)


def test_the_suggested_alert_rules_name_metrics_uplink_serves() -> None:
    rules = "\n".join(
        rule["expr"] for rule in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    )
    named = {family(name) for name in re.findall(r"\buplink_[a-z_]+", rules)}
    assert len(named) >= 8, named

    # Every metric family uplink renders, with a sample in each labelled one.
    tp = TopicPartition("t", 0)
    ingress = IngressMetrics("t", lambda: 0)
    worker = WorkerMetrics("w")
    for counts in (worker.processed, worker.duplicates, worker.dead_lettered, worker.retries):
        counts[tp] += 1
    worker.lag[tp] = 1
    router = RouterMetrics(worker.registry)
    router.retries["e"] += 1
    media = MediaMetrics()
    worker.registry.register(media)
    exposition = ingress.render().decode() + worker.render().decode()
    served = {family(n) for n in re.findall(r"^# TYPE (uplink_[a-z_]+) ", exposition, re.M)}
    assert named <= served, f"named in {ALERTS.name}, not served: {sorted(named - served)}"
