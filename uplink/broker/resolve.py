"""Which Kafka broker a test run or `uplink dev` talks to.

``KAFKA_BOOTSTRAP_SERVERS`` if set → for a caller whose broker is disposable (the test session), a
testcontainers Kafka when a container engine answers → the local broker started from Maven
Central jars, with its data where the caller says. (The benchmarks run the local broker: their
results compare with earlier runs on it.) Every path is
a real broker speaking the Kafka protocol.

`uplink dev` is not disposable: its topics and offsets live under ``var/`` across runs, and the
archive names its files by offset, so a fresh broker starting offsets at 0 again would have it
overwrite what it archived before. It always runs the local broker (or the configured one).

``UPLINK_TEST_KAFKA`` picks for a disposable caller: ``auto`` (the default, as above),
``container`` (an engine must answer: a run that means to test through one must not quietly
fall back) or ``local``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from uplink.broker.container import ContainerBroker, ContainerSettings
from uplink.broker.local import (
    BrokerSettings,
    LineFilter,
    LocalBroker,
    default_cache_dir,
    free_port,
)
from uplink.exceptions import BrokerError, ConfigError

log = logging.getLogger(__name__)

__all__ = ["docker_engine_answers", "free_port", "kafka_broker", "kafka_choice"]

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
def kafka_broker(
    environ: Mapping[str, str],
    data_dir: Path,
    port: int | None = None,
    cache_dir: Path | None = None,
    log_file: Path | None = None,
    console: LineFilter | None = None,
    *,
    disposable: bool = False,
) -> Iterator[str]:
    """Yield the bootstrap servers of a running broker; stop it afterwards if we started it.

    ``disposable``: the caller keeps nothing of the broker past this block, so a container
    broker, removed afterwards, will do (``data_dir`` then goes unused). ``log_file`` and
    ``console`` are the local broker's (``LocalBroker``): where its output is kept, and what of
    it reaches stderr (default: all of it, and no file)."""
    configured = environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        log.info("using the configured Kafka at %s", configured)
        yield configured
        return
    if disposable:
        choice = kafka_choice(environ)
        if choice == "container" or (choice == "auto" and docker_engine_answers(environ)):
            if choice == "container" and not docker_engine_answers(environ):
                raise BrokerError(
                    "UPLINK_TEST_KAFKA=container, but no container engine answers "
                    f"(DOCKER_HOST={environ.get('DOCKER_HOST', '')!r})"
                )
            with ContainerBroker(ContainerSettings.from_env(environ), environ) as container:
                yield container.bootstrap_servers
            return
    settings = BrokerSettings(
        port=port or free_port(),
        controller_port=free_port(),
        data_dir=data_dir,
        cache_dir=cache_dir or default_cache_dir(),
    )
    with LocalBroker(settings, log_file=log_file, console=console) as broker:
        yield broker.bootstrap_servers
