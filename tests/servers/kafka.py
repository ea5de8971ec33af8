"""A throwaway single-node Kafka (KRaft) in a container, started and removed through testcontainers.

The image is configured by ``KAFKA_*`` environment variables the way the official ``apache/kafka``
image is (docker-compose.yml runs that image): ``apache/kafka:4.2.1`` on a machine that can pull
it, the image ``scripts/kafka-image/build`` makes from the local broker's jars on one that cannot.

Kafka tells its clients the address to reconnect to (the advertised listener), and reads it when
it starts, so the host port is chosen before the container starts and published as the same
number inside it. Readiness is the broker's own "Kafka Server started" line, followed on the
container's log stream as it comes, as the local broker's is.
"""

from __future__ import annotations

import collections
import logging
import socket
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from uplink.broker import kafka_broker
from uplink.broker.local import KAFKA_VERSION, free_port, new_cluster_id
from uplink.exceptions import BrokerError, ConfigError
from uplink.resources import BlockingResource

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

log = logging.getLogger(__name__)

DEFAULT_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
LABEL = "dev.uplink.test-run"  # on every container started here: what a run cleans up after
_READY_LINE = "Kafka Server started"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# Inside the container only: the controller and the broker's own (inter-broker) listener.
_CONTROLLER_PORT = 9093
_BROKER_PORT = 9094


@dataclass(frozen=True)
class ContainerSettings:
    image: str = DEFAULT_IMAGE
    run: str = "unnamed"  # the LABEL's value: which test run started the container
    heap: str = "1g"
    ready_timeout: float = 180.0  # a first start may pull the image

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ContainerSettings:
        """``UPLINK_TEST_KAFKA_IMAGE`` (default the official image) and ``UPLINK_TEST_RUN``."""
        image = environ.get("UPLINK_TEST_KAFKA_IMAGE", "").strip() or DEFAULT_IMAGE
        if any(c.isspace() for c in image):
            raise ConfigError("UPLINK_TEST_KAFKA_IMAGE", f"not an image name: {image!r}")
        return cls(image=image, run=environ.get("UPLINK_TEST_RUN", "").strip() or cls.run)


def kafka_environment(host: str, port: int, heap: str) -> dict[str, str]:
    """The official image's configuration of a one-node cluster serving ``host:port``, with the
    local broker's settings (uplink.broker.local): what the tests rely on either way."""
    return {
        "CLUSTER_ID": new_cluster_id(),
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@localhost:{_CONTROLLER_PORT}",
        "KAFKA_LISTENERS": (
            f"PLAINTEXT://:{port},BROKER://localhost:{_BROKER_PORT},"
            f"CONTROLLER://localhost:{_CONTROLLER_PORT}"
        ),
        "KAFKA_ADVERTISED_LISTENERS": (
            f"PLAINTEXT://{host}:{port},BROKER://localhost:{_BROKER_PORT}"
        ),
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_LOG_DIRS": "/var/lib/kafka/data",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_HEAP_OPTS": f"-Xmx{heap} -Xms256m",
    }


class ContainerBroker(BlockingResource):
    """One Kafka container: ``start()`` returns once it serves, ``stop()`` removes it (twice is
    safe). ``environ`` is where the Docker client finds its engine (``DOCKER_HOST``)."""

    def __init__(
        self,
        settings: ContainerSettings,
        environ: Mapping[str, str],
        log_sink: IO[str] | None = None,
    ) -> None:
        self.settings = settings
        self._environ = environ
        self._sink = log_sink
        self._container: DockerContainer | None = None
        self._bootstrap = ""
        self._ready = threading.Event()  # the ready line came, or the log stream ended
        self._serving = False
        self._tail: collections.deque[str] = collections.deque(maxlen=40)
        self._pump: threading.Thread | None = None
        self.name = f"uplink-test-kafka-{uuid.uuid4().hex[:12]}"

    @property
    def bootstrap_servers(self) -> str:
        if not self._bootstrap:
            raise BrokerError("the Kafka container is not started")
        return self._bootstrap

    def start(self) -> None:
        from testcontainers.core.container import DockerContainer

        if self._container is not None:
            raise BrokerError("the Kafka container is already started")
        container = DockerContainer(
            self.settings.image,
            docker_client_kw={"environment": dict(self._environ)},
            name=self.name,
            labels={LABEL: self.settings.run},
        )
        # The engine's host as testcontainers sees it (TESTCONTAINERS_HOST_OVERRIDE, DOCKER_HOST's
        # host name, else this machine); a local engine publishes on loopback only.
        host = container.get_docker_client().host()
        if host in _LOCAL_HOSTS:
            host = "127.0.0.1"
        port = free_port()
        container.with_envs(**kafka_environment(host, port, self.settings.heap))
        # The Docker SDK takes (address, port) for a binding; testcontainers types only the port.
        cast(dict[str, Any], container.ports)[f"{port}/tcp"] = (
            ("127.0.0.1", port) if host == "127.0.0.1" else port
        )
        self._container = container
        try:
            container.start()
            self._pump = threading.Thread(
                target=self._copy_output, args=(container,), name="kafka-log", daemon=True
            )
            self._pump.start()
            self._ready.wait(self.settings.ready_timeout)
            if not self._serving:
                raise BrokerError(
                    f"the Kafka container {self.name} ({self.settings.image}) "
                    + (
                        "exited while starting"
                        if self._ready.is_set()
                        else f"did not start within {self.settings.ready_timeout:.0f}s"
                    )
                    + "; its last lines:\n"
                    + "".join(self._tail)
                )
        except BaseException:
            self._remove(container)
            raise
        self._bootstrap = f"{host}:{port}"
        log.info(
            "Kafka serving on %s in container %s (%s)",
            self._bootstrap,
            self.name,
            self.settings.image,
        )

    def _copy_output(self, container: DockerContainer) -> None:
        """The pump: the container's output, line by line, to the sink and the tail kept for
        errors; readiness from the broker's ready line. Ends when the container does."""
        sink = self._sink if self._sink is not None else sys.stderr
        try:
            chunks = container.get_wrapped_container().logs(stream=True, follow=True)
        except Exception as exc:
            self._tail.append(f"(its log stream could not be read: {exc})\n")
            self._ready.set()
            return
        try:
            for line in _lines(chunks):
                if _READY_LINE in line:
                    self._serving = True
                    self._ready.set()
                self._tail.append(line)
                sink.write(line)
                sink.flush()
        except Exception as exc:  # the stream breaks when the container is removed under it
            log.debug("Kafka container log stream ended: %s", exc)
        finally:
            chunks.close()  # its socket: the stream may end without closing it
            self._ready.set()

    def stop(self) -> None:
        """Remove the container (SIGKILL: its data goes with it, nothing to shut down for)."""
        container, self._container = self._container, None
        self._bootstrap = ""
        if container is not None and not self._remove(container):
            raise BrokerError(f"could not remove the Kafka container {self.name}")

    def _remove(self, container: DockerContainer) -> bool:
        """Remove ``container`` and end its pump; False (and logged) when that failed."""
        self._container = None
        try:
            container.stop()
            return True
        except Exception as exc:  # the engine went away, or refused
            log.error("could not remove the Kafka container %s: %s", self.name, exc)
            return False
        finally:
            if self._pump is not None:
                self._pump.join(timeout=10)
                self._pump = None


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Whole lines out of a log stream's chunks, which end anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode(errors="replace") + "\n"
    if pending:
        yield pending.decode(errors="replace") + "\n"


_CHOICES = ("auto", "container", "local")
_DEFAULT_SOCKET = "/var/run/docker.sock"


def docker_engine_answers(environ: Mapping[str, str]) -> bool:
    """Does the engine at ``DOCKER_HOST`` (else /var/run/docker.sock) answer the API's ping?"""
    host = environ.get("DOCKER_HOST", "").strip() or f"unix://{_DEFAULT_SOCKET}"
    if host.startswith("unix://"):
        return _unix_ping(host.removeprefix("unix://"))
    try:
        import docker  # comes with testcontainers (test extra)
    except ImportError:
        return False
    try:
        # A fixed API version (one Docker and podman 4 both serve): with "auto" the client asks
        # the engine while it is made, and leaks that socket when no engine answers.
        client = docker.from_env(timeout=3, version="1.41", environment=dict(environ))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # the client raises many kinds; all mean "no engine here"
        log.debug("no Docker engine: %s", exc)
        return False


def _unix_ping(path: str, timeout: float = 3.0) -> bool:
    """GET /_ping on a local engine's socket. Not through the Docker SDK: its connection leaks
    its socket when nothing listens (a stale socket file, an engine gone)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: engine\r\n\r\n")
            status = sock.recv(32).split(b"\r\n", 1)[0].split()
    except OSError as exc:
        log.debug("no container engine at %s: %s", path, exc)
        return False
    return len(status) >= 2 and status[0].startswith(b"HTTP/") and status[1] == b"200"


def kafka_choice(environ: Mapping[str, str]) -> str:
    """``UPLINK_TEST_KAFKA``: auto, container or local."""
    choice = environ.get("UPLINK_TEST_KAFKA", "").strip().lower() or "auto"
    if choice not in _CHOICES:
        raise ConfigError("UPLINK_TEST_KAFKA", f"must be one of {', '.join(_CHOICES)}: {choice!r}")
    return choice


@contextmanager
def session_broker(environ: Mapping[str, str], data_dir: Path) -> Iterator[str]:
    """The test session's broker: ``KAFKA_BOOTSTRAP_SERVERS`` if set → a testcontainers Kafka
    when an engine answers (``UPLINK_TEST_KAFKA``: auto, container or local; ``container`` means
    an engine must answer, so a run meant to test through one never quietly falls back) → the
    local broker from jars, as `uplink dev` runs it."""
    configured = environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    choice = kafka_choice(environ)
    if not configured and choice != "local":
        answers = docker_engine_answers(environ)
        if choice == "container" and not answers:
            raise BrokerError(
                "UPLINK_TEST_KAFKA=container, but no container engine answers "
                f"(DOCKER_HOST={environ.get('DOCKER_HOST', '')!r})"
            )
        if answers:
            with ContainerBroker(ContainerSettings.from_env(environ), environ) as container:
                yield container.bootstrap_servers
            return
    with kafka_broker(environ, data_dir=data_dir) as bootstrap:
        yield bootstrap
