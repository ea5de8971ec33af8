"""Which Kafka broker `uplink dev` and the benchmarks talk to.

``KAFKA_BOOTSTRAP_SERVERS`` if set, else the local broker started from Maven Central jars, with
its data where the caller says. `uplink dev`'s topics and offsets live under ``var/`` across runs
(the archive names its files by offset, so a fresh broker starting offsets at 0 again would have
it overwrite what it archived before). The tests add a disposable container broker on top
(tests/servers/kafka.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from uplink.broker.local import (
    BrokerSettings,
    LineFilter,
    LocalBroker,
    free_port,
)
from uplink.cache import default_cache_dir

log = logging.getLogger(__name__)

__all__ = ["free_port", "kafka_broker"]


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
    settings = BrokerSettings(
        port=port or free_port(),
        controller_port=free_port(),
        data_dir=data_dir,
        cache_dir=cache_dir or default_cache_dir(),
    )
    with LocalBroker(settings, log_file=log_file, console=console) as broker:
        yield broker.bootstrap_servers
