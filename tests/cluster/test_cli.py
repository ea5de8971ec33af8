"""`uplink broker --nodes 3`: three nodes serving one cluster on consecutive ports, a topic with
three replicas, all stopped together on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.cluster.load import until
from uplink.broker.cluster import describe, fully_replicated

pytestmark = [pytest.mark.anyio, pytest.mark.cluster]


def free_run(length: int) -> int:
    """A port with the ``length - 1`` ports after it free too, now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        if base + length > 65535:
            continue
        sockets = []
        try:
            for port in range(base, base + length):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {length} consecutive free ports")


async def test_uplink_broker_nodes_3_serves_a_replicated_cluster_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    port = free_run(6)
    stderr = (tmp_path / "stderr").open("w")  # a file: a pipe nobody reads would stall Kafka
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uplink.cli.main", "broker", "--nodes", "3", "--port", str(port),
        "--data-dir", str(tmp_path / "kafka"),
        stdout=subprocess.PIPE, stderr=stderr,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(180):
            line = await process.stdout.readline()
        bootstrap = ",".join(f"127.0.0.1:{port + 2 * n}" for n in range(3))
        assert f"Kafka cluster of 3 nodes serving on {bootstrap}".encode() in line, line
        assert sorted(p.name for p in (tmp_path / "kafka").iterdir()) == [
            "node-1",
            "node-2",
            "node-3",
        ]

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("replicated", 3, 3)])
        finally:
            await admin.close()
        # create_topics answers once the controller has the topic; the node describe asks may
        # not have its partitions yet.
        await until(lambda: fully_replicated(bootstrap, ["replicated"]), "the topic replicated", 60)
        states = (await describe(bootstrap, ["replicated"]))["replicated"]
        assert [sorted(state.replicas) for state in states] == [[1, 2, 3]] * 3

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(90):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        stderr.close()
