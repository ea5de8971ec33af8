"""Which Kafka broker a test run or `uplink dev` talks to.

``KAFKA_BOOTSTRAP_SERVERS`` if set → a testcontainers Kafka when a Docker engine answers → the local
broker started from Maven Central jars. Every path is a real broker speaking the Kafka protocol.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from uplink.broker.local import BrokerSettings, LineFilter, LocalBroker, default_cache_dir

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def docker_engine_answers(environ: Mapping[str, str]) -> bool:
    if not environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        # No engine to ask; the Docker SDK would leak a socket finding that out.
        return False
    try:
        import docker  # comes with testcontainers (test extra)
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception as exc:  # the client raises many kinds; all mean "no engine here"
        log.debug("no Docker engine: %s", exc)
        return False


@contextmanager
def kafka_broker(
    environ: Mapping[str, str],
    data_dir: Path,
    port: int | None = None,
    cache_dir: Path | None = None,
    log_file: Path | None = None,
    console: LineFilter | None = None,
) -> Iterator[str]:
    """Yield the bootstrap servers of a running broker; stop it afterwards if we started it.

    ``log_file`` and ``console`` are the local broker's (``LocalBroker``): where its output is
    kept, and what of it reaches stderr (default: all of it, and no file)."""
    configured = environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        log.info("using the configured Kafka at %s", configured)
        yield configured
        return
    if docker_engine_answers(environ):
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    settings = BrokerSettings(
        port=port or free_port(),
        controller_port=free_port(),
        data_dir=data_dir,
        cache_dir=cache_dir or default_cache_dir(),
    )
    with LocalBroker(settings, log_file=log_file, console=console) as broker:
        yield broker.bootstrap_servers
