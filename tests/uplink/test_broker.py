"""`uplink broker` runs a real Kafka in the foreground and stops cleanly on SIGTERM; the local
broker's output goes where its caller says; its jars are fetched once, saying so."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from uplink.broker import KAFKA_VERSION, BrokerSettings, LocalBroker, fetch_jars, free_port
from uplink.broker.local import ConsoleFilter, new_cluster_id
from uplink.exceptions import BrokerError

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def test_uplink_broker_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    stderr = (tmp_path / "stderr").open("w")  # a file: a pipe nobody reads would stall Kafka
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uplink.cli.main",
        "broker",
        "--port",
        str(port),
        "--controller-port",
        str(free_port()),
        "--data-dir",
        str(tmp_path / "kafka"),
        stdout=subprocess.PIPE,
        stderr=stderr,
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
        stderr.close()
    # Without a log file (only `uplink dev` asks for one), all of Kafka's output is on stderr.
    output = (tmp_path / "stderr").read_text()
    assert "] INFO " in output and "Kafka Server started" in output
    assert not list((tmp_path / "kafka").glob("*.log"))


def test_a_failed_start_names_the_log_file_which_has_all_the_console_only_warnings(
    tmp_path: Path,
) -> None:
    log_file = tmp_path / "kafka" / "broker.log"
    console = io.StringIO()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = BrokerSettings(
            port=taken.getsockname()[1],
            controller_port=free_port(),
            data_dir=tmp_path / "kafka",
            ready_timeout=60,
        )
        broker = LocalBroker(
            settings, log_sink=console, log_file=log_file, console=ConsoleFilter(prefix="kafka: ")
        )
        with pytest.raises(BrokerError) as failed:
            broker.start()
    assert "Kafka exited with 1 while starting" in str(failed.value)
    assert f"its log: {log_file}" in str(failed.value)
    shown = console.getvalue().splitlines()
    logged = log_file.read_text().splitlines()
    # On the console: its errors and warnings, with their stack traces, prefixed; not its INFO.
    assert all(line.startswith("kafka: ") for line in shown)
    problems = [line for line in logged if "] ERROR " in line or "] WARN " in line]
    assert problems and {f"kafka: {line}" for line in problems} <= set(shown)
    assert any("failed to bind" in line and "Address already in use" in line for line in shown)
    assert "] INFO " not in "\n".join(shown)
    # In the log file: everything.
    assert len(logged) > len(shown) and "] INFO " in "\n".join(logged)


def test_the_console_filter_keeps_problems_with_their_lines_not_races_kafka_retries() -> None:
    keep = ConsoleFilter(prefix="kafka: ")
    lines = [
        "Error: could not find or load main class kafka.Kafka\n",  # the JVM's, before any record
        "[2026-01-01 10:00:00,000] INFO KafkaConfig values: \n",
        "\tadvertised.listeners = [PLAINTEXT://127.0.0.1:9092]\n",
        " (org.apache.kafka.common.config.AbstractConfig)\n",
        "[2026-01-01 10:00:01,000] WARN Auto topic creation failed (kafka.server.X)\n",
        "[2026-01-01 10:00:02,000] ERROR Exiting Kafka (kafka.Kafka$)\n",
        "java.net.BindException: Address already in use\n",
        "\tat java.base/sun.nio.ch.Net.bind0(Native Method)\n",
        "[2026-01-01 10:00:02,500] ERROR [ControllerApis nodeId=1] Unexpected error handling "
        "request RequestHeader(apiKey=CONTROLLER_REGISTRATION, apiVersion=0) (kafka.server.X)\n",
        "org.apache.kafka.common.errors.NotControllerException: The active controller appears\n",
        "[2026-01-01 10:00:03,000] INFO shutting down (kafka.server.BrokerServer)\n",
        "2026-01-01T10:00:04.000000000Z main ERROR log4j: no such appender\n",
        "2026-01-01T10:00:05.000000000Z main DEBUG log4j: a status detail\n",
    ]
    assert [shown for line in lines if (shown := keep(line)) is not None] == [
        "kafka: Error: could not find or load main class kafka.Kafka\n",
        "kafka: [2026-01-01 10:00:01,000] WARN Auto topic creation failed (kafka.server.X)\n",
        "kafka: [2026-01-01 10:00:02,000] ERROR Exiting Kafka (kafka.Kafka$)\n",
        "kafka: java.net.BindException: Address already in use\n",
        "kafka: \tat java.base/sun.nio.ch.Net.bind0(Native Method)\n",
        "kafka: 2026-01-01T10:00:04.000000000Z main ERROR log4j: no such appender\n",
    ]


FAKE_MVN = """#!/bin/sh
echo "[INFO] Downloading from central: https://repo.maven.apache.org/maven2/kafka.jar"
echo "maven complains on stderr" >&2
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) mkdir -p "${arg#-DoutputDirectory=}" ;; esac
done
exit "${FAKE_MVN_EXIT:-0}"
"""


@pytest.fixture
def fake_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `mvn` on PATH that talks as Maven does and creates the jar folder it is given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(FAKE_MVN)
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.mark.usefixtures("fake_mvn")
def test_fetching_the_jars_says_so_in_one_line_and_keeps_mavens_output_off_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / ".cache" / "uplink"  # under $HOME: shown as ~/...
    libs = fetch_jars(cache)
    out, err = capfd.readouterr()
    assert libs == cache / f"kafka-{KAFKA_VERSION}" / "libs" and (libs / ".complete").exists()
    assert out == ""
    assert err == (
        f"uplink: fetching Apache Kafka {KAFKA_VERSION} from Maven Central into ~/.cache/uplink"
        " (first run only, about a minute)…\n"
    )
    assert fetch_jars(cache) == libs  # cached: nothing to say
    assert capfd.readouterr() == ("", "")


@pytest.mark.usefixtures("fake_mvn")
def test_a_failed_fetch_shows_what_maven_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_MVN_EXIT", "1")
    with pytest.raises(BrokerError) as failed:
        fetch_jars(tmp_path / "cache")
    assert "Downloading from central" in str(failed.value)
    assert "maven complains on stderr" in str(failed.value)
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("uplink: fetching")
    assert not (tmp_path / "cache" / f"kafka-{KAFKA_VERSION}" / "libs" / ".complete").exists()


def test_cluster_ids_never_look_like_an_option() -> None:
    # 1 in 64 random ids starts with "-"; 2,000 draws all but certainly include such a draw.
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [cluster_id for cluster_id in ids if cluster_id.startswith("-")]
    assert all(len(cluster_id) == 22 for cluster_id in ids)
