"""A single-node Apache Kafka (KRaft, broker and controller in one JVM) from Maven Central jars.

The Kafka tarball is not reachable from every machine, Maven Central is: Maven copies the broker's
jars into a cache outside the repository once, then every start is a plain ``java`` process.

The broker's output (log4j2.properties: ``[%d] %p %m (%c)%n``) goes to stderr as it comes, or, for
`uplink dev`, to a log file with only its warnings and errors on the console (``ConsoleFilter``).
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO

from uplink.cache import (
    MAVEN_DEPENDENCY_PLUGIN,
    default_cache_dir,
    fetch_once,
    run_quietly,
    shown,
)
from uplink.exceptions import BrokerError
from uplink.resources import BlockingResource

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.2.1"
_READY_LINE = "Kafka Server started"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class BrokerSettings:
    port: int = 9092
    controller_port: int | None = None  # default: port + 1
    data_dir: Path = Path("var/kafka")
    cache_dir: Path = field(default_factory=default_cache_dir)
    kafka_version: str = KAFKA_VERSION
    heap: str = "1g"
    ready_timeout: float = 120.0
    # One node of a cluster (uplink/broker/cluster.py): its id, the static controller quorum
    # (``1@127.0.0.1:9093,...``; None: this node alone), the cluster's id (formatted once for all
    # its nodes) and the replication of Kafka's own topics (offsets, transactions).
    node_id: int = 1
    voters: str | None = None
    cluster_id: str | None = None
    replication: int = 1
    # Extra server.properties lines (the cluster's failure detection, a secured broker's
    # listeners), after uplink's own: a key given again wins.
    overrides: tuple[tuple[str, str], ...] = ()
    format_options: tuple[str, ...] = ()  # extra StorageTool format arguments (SCRAM users)
    jvm_options: tuple[str, ...] = ()  # extra -D options (the OAuth URLs Kafka may fetch)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def fetch_jars(cache_dir: Path, kafka_version: str = KAFKA_VERSION) -> Path:
    """Copy the broker's runtime jars from Maven Central into the cache (once per machine, about
    a minute); returns the jar folder."""
    libs = cache_dir / f"kafka-{kafka_version}" / "libs"
    done = libs / ".complete"
    if done.exists():
        return libs
    if shutil.which("mvn") is None:
        raise BrokerError("the local Kafka broker needs Maven (`mvn`) on PATH to fetch its jars")

    def fetch() -> None:
        pom = resources.files("uplink.broker").joinpath("pom.xml")
        (libs.parent / "pom.xml").write_bytes(pom.read_bytes())
        run_quietly(
            [
                "mvn",
                "-B",
                "-q",
                "-f",
                str(libs.parent / "pom.xml"),
                f"{MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                "-DincludeScope=runtime",
                f"-Dkafka.version={kafka_version}",
                f"-DoutputDirectory={libs}",
            ],
            BrokerError,
            f"mvn could not fetch Kafka {kafka_version} jars",
        )
        done.touch()

    fetch_once(
        f"Apache Kafka {kafka_version}",
        done,
        libs.parent / ".lock",
        fetch,
        f"fetching Apache Kafka {kafka_version} from Maven Central into {shown(cache_dir)} "
        "(first run only, about a minute)…",
    )
    return libs


def new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid(): URL-safe base64 of 16 random bytes without padding, redrawn
    # when it starts with "-", which command lines would read as an option (1 in 64 draws).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


LineFilter = Callable[[str], str | None]
"""What of one line of the broker's output reaches the console: the text to write, or None."""

# The start of a record: log4j2.properties' ``[%d] %p ``, or log4j's own status logger's
# ``<ISO time> <thread> <level> `` (its problems with the configuration, say).
_RECORD = re.compile(
    r"(?:\[[^\]]*\]|\d{4}-\d\d-\d\dT\S+ \S+) (?P<level>TRACE|DEBUG|INFO|WARN|ERROR|FATAL) "
)


# Records Kafka logs at ERROR for a request it retries on its own, so they are not a problem to
# show: on a restart, the node registers its controller with itself a moment before it is the
# active controller again (NotControllerException), and the registration manager simply retries.
_SELF_HEALING = re.compile(
    r"Unexpected error handling request RequestHeader\(apiKey=CONTROLLER_REGISTRATION,"
)


class ConsoleFilter:
    """The broker's records at ``levels`` (warnings and errors by default), prefixed.

    A line that starts no record continues the one before (a stack trace, the configuration
    dump) and goes with it; output before the first record (the JVM's own complaints: a missing
    class, a bad option) is shown. Records of a race the broker retries itself (``_SELF_HEALING``)
    stay in the log file only. One instance per broker process: it follows its records.
    """

    def __init__(
        self, levels: frozenset[str] = frozenset({"WARN", "ERROR", "FATAL"}), prefix: str = ""
    ) -> None:
        self.levels = levels
        self.prefix = prefix
        self._showing = True

    def __call__(self, line: str) -> str | None:
        record = _RECORD.match(line)
        if record is not None:
            self._showing = record["level"] in self.levels and not _SELF_HEALING.search(line)
        return f"{self.prefix}{line}" if self._showing else None


class LocalBroker(BlockingResource):
    """One Kafka process: ``start()`` returns once it serves, ``stop()`` is safe to call twice.

    Its output is read line by line: readiness is the broker's own "Kafka Server started" line.
    Every line is appended to ``log_file`` when one is given, and written to ``log_sink`` (stderr
    by default) as it comes, or as ``console`` rewrites it (None: not on the console).
    """

    def __init__(
        self,
        settings: BrokerSettings,
        log_sink: IO[str] | None = None,
        *,
        log_file: Path | None = None,
        console: LineFilter | None = None,
    ) -> None:
        self.settings = settings
        self._sink = log_sink
        self.log_file = log_file
        self._console = console
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()  # the ready line came, or the output ended
        self._serving = False  # the ready line came
        self._pump: threading.Thread | None = None

    @property
    def bootstrap_servers(self) -> str:
        return self.settings.bootstrap_servers

    def _controller_port(self) -> int:
        return self.settings.controller_port or self.settings.port + 1

    def _write_config(self, data_dir: Path) -> Path:
        settings = self.settings
        port, cport = settings.port, self._controller_port()
        # A single node finds its quorum through itself (formatted --standalone); a cluster's
        # nodes have the static voter set, so each one knows all three from its first start.
        quorum = (
            f"controller.quorum.voters={settings.voters}"
            if settings.voters
            else f"controller.quorum.bootstrap.servers=127.0.0.1:{cport}"
        )
        replicas = settings.replication
        # acks=all on Kafka's own topics means two copies once there are three.
        min_isr = 2 if replicas >= 3 else 1
        config = data_dir / "server.properties"
        config.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    f"node.id={settings.node_id}",
                    quorum,
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},"
                    f"CONTROLLER://127.0.0.1:{cport}",
                    "inter.broker.listener.name=PLAINTEXT",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={data_dir / 'logs'}",
                    f"offsets.topic.replication.factor={replicas}",
                    "offsets.topic.num.partitions=1",
                    f"transaction.state.log.replication.factor={replicas}",
                    f"transaction.state.log.min.isr={min_isr}",
                    # One partition, as the offsets topic: created and loaded at once, so one
                    # FindCoordinator answer means every transactional id's coordinator is up.
                    "transaction.state.log.num.partitions=1",
                    f"share.coordinator.state.topic.replication.factor={replicas}",
                    f"share.coordinator.state.topic.min.isr={min_isr}",
                    "group.initial.rebalance.delay.ms=0",
                    # Topics are created by uplink with their partition counts; a typo must not
                    # silently create a one-partition topic.
                    "auto.create.topics.enable=false",
                    *(f"{name}={value}" for name, value in settings.overrides),
                    "",
                ]
            )
        )
        return config

    def _java(self, classpath: str, *args: str) -> list[str]:
        log4j = resources.files("uplink.broker").joinpath("log4j2.properties")
        return [
            "java",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            classpath,
            *args,
        ]

    def _format(self, classpath: str, config: Path) -> None:
        """Format a new data directory (a restart on the same data keeps its cluster id)."""
        formatted = subprocess.run(
            self._java(
                classpath,
                "kafka.tools.StorageTool",
                "format",
                # A cluster's nodes share its id and their voters are in the configuration.
                *(() if self.settings.voters else ("--standalone",)),
                "--ignore-formatted",
                f"--cluster-id={self.settings.cluster_id or new_cluster_id()}",
                "-c",
                str(config),
                *self.settings.format_options,
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if formatted.returncode != 0:
            raise BrokerError(f"formatting {config.parent} failed:\n{formatted.stderr[-2000:]}")

    def start(self) -> None:
        if self._process is not None:
            raise BrokerError("broker already started")
        if shutil.which("java") is None:
            raise BrokerError("the local Kafka broker needs Java 17+ (`java`) on PATH")
        libs = fetch_jars(self.settings.cache_dir, self.settings.kafka_version)
        classpath = str(libs / "*")
        data_dir = self.settings.data_dir.resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config(data_dir)
        if not (data_dir / "logs" / "meta.properties").exists():
            self._format(classpath, config)
        self._ready.clear()
        self._serving = False
        kept = None
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            kept = self.log_file.open("a", buffering=1)  # line by line: readable as it runs
        try:
            self._process = subprocess.Popen(
                [
                    "java",
                    f"-Xmx{self.settings.heap}",
                    "-Xms256m",
                    "-XX:+UseG1GC",
                    "-Djava.awt.headless=true",
                    *self.settings.jvm_options,
                    *self._java(classpath, "kafka.Kafka", str(config))[1:],
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                # Own process group: Ctrl-C reaches uplink only, and uplink stops the broker last.
                start_new_session=True,
            )
        except BaseException:
            if kept is not None:
                kept.close()
            raise
        self._pump = threading.Thread(
            target=self._copy_output, args=(self._process, kept), name="kafka-log", daemon=True
        )
        self._pump.start()
        self._ready.wait(self.settings.ready_timeout)
        if not self._serving or self._process.poll() is not None:
            try:  # its output ended: it is exiting, with a code worth reporting
                code = self._process.wait(5) if self._ready.is_set() else None
            except subprocess.TimeoutExpired:
                code = None
            self.kill()
            raise BrokerError(
                (
                    f"Kafka exited with {code} while starting"
                    if code is not None
                    else f"Kafka did not start within {self.settings.ready_timeout:.0f}s"
                )
                + f"; ports {self.settings.port}/{self._controller_port()} may be taken"
                + (f"; its log: {self.log_file}" if self.log_file is not None else "")
            )
        log.info("Kafka %s serving on %s", self.settings.kafka_version, self.bootstrap_servers)

    def _copy_output(self, process: subprocess.Popen[str], kept: IO[str] | None) -> None:
        """The pump: every line of the broker's output to the log file and the console."""
        assert process.stdout is not None
        sink = self._sink if self._sink is not None else sys.stderr
        try:
            for line in process.stdout:
                if _READY_LINE in line:
                    self._serving = True
                    self._ready.set()
                if kept is not None:
                    kept.write(line)
                shown = line if self._console is None else self._console(line)
                if shown is not None:
                    sink.write(shown)
                    sink.flush()
        finally:
            if kept is not None:
                kept.close()
            self._ready.set()  # the process ended: wake start() so it reports the failure

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL if it takes longer than ``timeout``."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)  # a paused broker, too, shuts down
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._join_pump(process)

    def terminate(self) -> None:
        """Ask for a controlled shutdown without waiting (safe inside a signal handler)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            self._process.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        """Started and not exited (a paused broker is running)."""
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: a broker hung with its connections open (a long GC pause, a frozen VM)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause``."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if self._process is None or self._process.poll() is not None:
            raise BrokerError(f"broker {self.settings.node_id} is not running")
        os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        """SIGKILL: what a crashed machine looks like to clients."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        self._join_pump(process)

    def wait(self) -> int:
        """Block until the broker exits; returns its exit code."""
        if self._process is None:
            raise BrokerError("broker not started")
        return self._process.wait()

    def _join_pump(self, process: subprocess.Popen[str]) -> None:
        if self._pump is not None:
            self._pump.join(timeout=5)
            self._pump = None
        if process.stdout is not None:
            process.stdout.close()
