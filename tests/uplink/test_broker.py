"""`uplink broker` runs a real Kafka in the foreground and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from uplink.broker import free_port
from uplink.broker.local import new_cluster_id

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_uplink_broker_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "broker",
        "--port",
        str(port),
        "--controller-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "kafka"),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(120):
            line = await process.stdout.readline()
        assert f"Kafka serving on 127.0.0.1:{port}".encode() in line

        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        await admin.start()
        try:
            assert isinstance(await admin.list_topics(), list)
        finally:
            await admin.close()

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cluster_ids_never_look_like_an_option() -> None:
    # 1 in 64 random ids starts with "-"; 2,000 draws all but certainly include such a draw.
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(cluster_id) == 22 for cluster_id in ids)
