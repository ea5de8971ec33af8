"""The console's settings, built at the edge (``uplink console``, ``uplink dev``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from uplink.exceptions import ConfigError
from uplink.operate.deadletters import WORKERS
from uplink.operate.quarantine import DEFAULT_INGRESS
from uplink.s3.settings import Location
from uplink.settings import (
    KafkaSettings,
    RegistrySettings,
    Secret,
    Topics,
    kafka_from_env,
    registry_from_env,
    topics_from_env,
)
from uplink.variables import (
    CONSOLE,
    INTEGER,
    SECONDS,
    SECRET,
    URL,
    http_url,
    positive,
    read,
    validate,
    variable,
)

TOKEN = "UPLINK_CONSOLE_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ConsoleSettings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: Topics = field(default_factory=Topics)
    registry: RegistrySettings | None = None
    host: str = "127.0.0.1"
    port: int = 8090
    allow_actions: bool = False  # re-drive and repost; off unless --allow-actions
    token: Secret | None = variable(
        TOKEN,
        SECRET,
        CONSOLE,
        "the console's token (a login form, or `Authorization: Bearer`); required when it "
        "listens on an address other than loopback",
        default=None,
        shown="unset (loopback only)",
    )
    sample_interval: float = variable(
        "UPLINK_CONSOLE_SAMPLE_INTERVAL",
        SECONDS,
        CONSOLE,
        "how often the overview samples the topics' offsets and the groups' positions",
        default=10.0,
        check=positive,
    )
    ingress_url: str = variable(
        "UPLINK_CONSOLE_INGRESS_URL",
        URL,
        CONSOLE,
        "where the console reposts a quarantined body",
        default=DEFAULT_INGRESS,
        check=http_url,
    )
    readers: int = variable(
        "UPLINK_CONSOLE_READERS",
        INTEGER,
        CONSOLE,
        "consumers the console keeps started for its pages' reads: as many requests read at "
        "once, others wait for one",
        default=4,
        check=positive,
    )
    ingress_token: Secret | None = None  # UPLINK_TOKEN, declared by the ingress's settings
    # Where the router may have put a push (its delay topics and its rules' output topics),
    # from the router's own settings (UPLINK_ROUTER_RULES ...), read by the command line.
    router_outputs: tuple[str, ...] = ()
    media: Location | None = None  # the media store, UPLINK_MEDIA_DIR (the media worker's)
    # worker → its consumer group (default uplink-<worker>)
    groups: Mapping[str, str] = field(default_factory=lambda: {w: f"uplink-{w}" for w in WORKERS})
    span: float = 900.0  # seconds of samples the overview keeps and draws
    page_size: int = 100  # rows of a list page

    def __post_init__(self) -> None:
        validate(self)
        if self.token is None and not is_loopback(self.host):
            raise ConfigError(
                TOKEN, f"the console listens on {self.host}, not loopback: it needs a token"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> ConsoleSettings:
        parts = {
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "registry": registry_from_env(environ),
        }
        return read(cls, environ, given=parts, explicit=explicit)
