"""Frozen settings, built once at the edge from the environment and CLI flags.

Everything that reads ``os.environ`` lives here; the rest of the code receives a settings object.
Explicit values (CLI flags, keyword arguments) win over the environment, which wins over defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from uplink.exceptions import ConfigError

T = TypeVar("T")

MiB = 1024 * 1024


class Secret:
    """A string that never shows itself in reprs, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Topics:
    """Topic names (contract defaults) and how to create them when missing."""

    messages: str = "uplink.messages.v1"
    quarantine: str = "uplink.quarantine.v1"
    media: str = "uplink.media.v1"
    statuses: str = "uplink.statuses.v1"  # Meta's webhook: statuses of the messages sent
    meta_events: str = "uplink.meta.events.v1"  # Meta's webhook: every other field
    messages_partitions: int = 12  # and the statuses' (keyed by conversation too)
    partitions: int = 3  # every other uplink topic
    replication_factor: int = 1
    dlq_pattern: str = "uplink.{worker}.dlq.v1"

    def dlq(self, worker: str) -> str:
        return self.dlq_pattern.format(worker=worker)


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; shared by every producer, consumer and admin client."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "uplink"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_cafile: str | None = None
    # A push is at most max_body_bytes of raw JSON plus its typed view: leave room for both.
    max_request_size: int = 4 * MiB

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ConfigError("KAFKA_BOOTSTRAP_SERVERS", "must name at least one host:port")
        for server in self.bootstrap_servers.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError("KAFKA_BOOTSTRAP_SERVERS", f"{server!r} is not host:port")
        allowed = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
        if self.security_protocol not in allowed:
            raise ConfigError(
                "UPLINK_KAFKA_SECURITY_PROTOCOL",
                f"{self.security_protocol!r} is not one of {sorted(allowed)}",
            )
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ConfigError(
                "UPLINK_KAFKA_SASL_MECHANISM",
                "SASL needs UPLINK_KAFKA_SASL_MECHANISM, _USERNAME and _PASSWORD",
            )

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = (
                self.sasl_password.reveal() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        return options


GRAPH_URL = "https://graph.facebook.com"
GRAPH_VERSION = "v23.0"


@dataclass(frozen=True)
class MetaSettings:
    """Meta's WhatsApp Cloud API: the webhook's secrets (the ingress) and the Graph API (the
    media worker). The webhook is on when an app secret is set; see the README's table."""

    verify_token: Secret | None = None  # the handshake's hub.verify_token
    app_secrets: tuple[Secret, ...] = ()  # X-Hub-Signature-256 keys; several while rotating
    access_token: Secret | None = None  # Graph API bearer: media by id
    graph_url: str = GRAPH_URL
    graph_version: str = GRAPH_VERSION
    media_url_ttl: float = 300.0  # seconds a media URL from the Graph API is used for

    def __post_init__(self) -> None:
        positive("UPLINK_META_MEDIA_URL_TTL", self.media_url_ttl)
        parts = urlsplit(self.graph_url)
        if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
            raise ConfigError("UPLINK_META_GRAPH_URL", f"{self.graph_url!r} is not http(s)://")
        if not self.graph_version.strip() or "/" in self.graph_version:
            raise ConfigError(
                "UPLINK_META_GRAPH_VERSION", f"{self.graph_version!r} is not a version like v23.0"
            )

    @property
    def webhook(self) -> bool:
        """Whether ``/v1/meta`` is served."""
        return bool(self.app_secrets)

    def check_webhook(self) -> None:
        """Half a webhook configuration is a mistake: say which half is missing."""
        if self.verify_token is not None and not self.app_secrets:
            raise ConfigError(
                "UPLINK_META_APP_SECRET",
                "UPLINK_META_VERIFY_TOKEN is set, but without the app secret no POST to /v1/meta "
                "can be verified",
            )
        if self.app_secrets and self.verify_token is None:
            raise ConfigError(
                "UPLINK_META_VERIFY_TOKEN",
                "UPLINK_META_APP_SECRET is set, but Meta's subscription handshake needs the token",
            )


def meta_from_env(environ: Mapping[str, str]) -> MetaSettings:
    env = Env(environ)
    values: dict[str, Any] = {
        "verify_token": env.get("UPLINK_META_VERIFY_TOKEN", Secret),
        "app_secrets": env.get("UPLINK_META_APP_SECRET", _secrets),
        "access_token": env.get("UPLINK_META_ACCESS_TOKEN", Secret),
        "graph_url": env.get("UPLINK_META_GRAPH_URL", str),
        "graph_version": env.get("UPLINK_META_GRAPH_VERSION", str),
        "media_url_ttl": env.get("UPLINK_META_MEDIA_URL_TTL", float),
    }
    return build(MetaSettings, values, {})


def _secrets(text: str) -> tuple[Secret, ...]:
    """Comma-separated secrets, e.g. the new app secret and the old one while rotating."""
    secrets = tuple(Secret(part.strip()) for part in text.split(",") if part.strip())
    if not secrets:
        raise ValueError("no secret in it")
    return secrets


@dataclass(frozen=True)
class RegistrySettings:
    """A Confluent-compatible schema registry (UPLINK_SCHEMA_REGISTRY_*): where it is, how to
    log in and which certificates to trust. ``url`` is the API's base (Apicurio's
    ``http://host:8080/apis/ccompat/v7``, Confluent's ``http://host:8081``)."""

    url: str
    username: str | None = None
    password: Secret | None = None
    ca_file: str | None = None  # a PEM bundle to trust instead of the system's
    verify: bool = True  # False: no TLS verification at all (a test registry only)
    timeout: float = 5.0  # seconds per request

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("UPLINK_SCHEMA_REGISTRY_URL", f"{self.url!r} is not an http(s) URL")
        if (self.username is None) != (self.password is None):
            raise ConfigError(
                "UPLINK_SCHEMA_REGISTRY_USERNAME",
                "basic auth needs both UPLINK_SCHEMA_REGISTRY_USERNAME and _PASSWORD",
            )
        positive("UPLINK_SCHEMA_REGISTRY_TIMEOUT", self.timeout)


def registry_from_env(environ: Mapping[str, str]) -> RegistrySettings | None:
    """The registry settings, or None without UPLINK_SCHEMA_REGISTRY_URL (single-object
    framing, no registry)."""
    env = Env(environ)
    url = env.get("UPLINK_SCHEMA_REGISTRY_URL", str)
    if url is None:
        return None
    values: dict[str, Any] = {
        "url": url.rstrip("/"),
        "username": env.get("UPLINK_SCHEMA_REGISTRY_USERNAME", str),
        "password": env.get("UPLINK_SCHEMA_REGISTRY_PASSWORD", Secret),
        "ca_file": env.get("UPLINK_SCHEMA_REGISTRY_CA_FILE", str),
        "verify": env.get("UPLINK_SCHEMA_REGISTRY_VERIFY", boolean),
        "timeout": env.get("UPLINK_SCHEMA_REGISTRY_TIMEOUT", float),
    }
    return build(RegistrySettings, values, {})


@dataclass(frozen=True)
class IngressSettings:
    """Everything the HTTP ingress needs; see the README's configuration table."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: Topics = field(default_factory=Topics)
    token: Secret | None = None
    meta: MetaSettings = field(default_factory=MetaSettings)  # /v1/meta, when configured
    max_body_bytes: int = 1 * MiB
    produce_timeout: float = 5.0  # seconds until a push that is not acked gets 503
    max_in_flight: int = 4096  # pushes awaiting the broker; beyond this → 503 (shed)
    retry_after: int = 5  # seconds, sent with every 503
    # Seconds without an answer from any broker after which pushes are answered 503 at once.
    unreachable_after: float = 3.0
    outage_reminder: float = 60.0  # seconds between the log's reminders while Kafka is lost
    # 0 measured best: while a produce request is in flight, the next batch fills anyway.
    linger_ms: int = 0
    # Per partition. aiokafka keeps one produce request in flight per broker, so under load
    # the batch size, not the linger, bounds how many pushes one round trip can acknowledge.
    batch_bytes: int = 256 * 1024
    create_topics: bool = True
    # Set: the push schema is registered at start-up and records carry the Confluent framing.
    registry: RegistrySettings | None = None

    def __post_init__(self) -> None:
        self.meta.check_webhook()
        positive("UPLINK_MAX_BODY_BYTES", self.max_body_bytes)
        positive("UPLINK_PRODUCE_TIMEOUT", self.produce_timeout)
        positive("UPLINK_MAX_IN_FLIGHT", self.max_in_flight)
        positive("UPLINK_RETRY_AFTER", self.retry_after)
        positive("UPLINK_KAFKA_UNREACHABLE_AFTER", self.unreachable_after)
        positive("UPLINK_OUTAGE_REMINDER", self.outage_reminder)
        positive("UPLINK_BATCH_BYTES", self.batch_bytes)
        if self.linger_ms < 0:
            raise ConfigError("UPLINK_LINGER_MS", "must be >= 0")
        if self.max_body_bytes * 2 + 64 * 1024 > self.kafka.max_request_size:
            raise ConfigError(
                "UPLINK_MAX_BODY_BYTES",
                "a record holds the body twice (raw and typed): "
                "raise UPLINK_KAFKA_MAX_REQUEST_SIZE too",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> IngressSettings:
        """Settings from ``environ``; keyword arguments win over it."""
        env = Env(environ)
        values: dict[str, Any] = {
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "token": env.get("UPLINK_TOKEN", Secret),
            "meta": meta_from_env(environ),
            "max_body_bytes": env.get("UPLINK_MAX_BODY_BYTES", int),
            "produce_timeout": env.get("UPLINK_PRODUCE_TIMEOUT", float),
            "max_in_flight": env.get("UPLINK_MAX_IN_FLIGHT", int),
            "retry_after": env.get("UPLINK_RETRY_AFTER", int),
            "unreachable_after": env.get("UPLINK_KAFKA_UNREACHABLE_AFTER", float),
            "outage_reminder": env.get("UPLINK_OUTAGE_REMINDER", float),
            "linger_ms": env.get("UPLINK_LINGER_MS", int),
            "batch_bytes": env.get("UPLINK_BATCH_BYTES", int),
            "create_topics": env.get("UPLINK_CREATE_TOPICS", boolean),
            "registry": registry_from_env(environ),
        }
        return build(cls, values, explicit)


def kafka_from_env(environ: Mapping[str, str]) -> KafkaSettings:
    env = Env(environ)
    values: dict[str, Any] = {
        "bootstrap_servers": env.get("KAFKA_BOOTSTRAP_SERVERS", str),
        "client_id": env.get("UPLINK_KAFKA_CLIENT_ID", str),
        "security_protocol": env.get("UPLINK_KAFKA_SECURITY_PROTOCOL", str.upper),
        "sasl_mechanism": env.get("UPLINK_KAFKA_SASL_MECHANISM", str),
        "sasl_username": env.get("UPLINK_KAFKA_SASL_USERNAME", str),
        "sasl_password": env.get("UPLINK_KAFKA_SASL_PASSWORD", Secret),
        "ssl_cafile": env.get("UPLINK_KAFKA_SSL_CAFILE", str),
        "max_request_size": env.get("UPLINK_KAFKA_MAX_REQUEST_SIZE", int),
    }
    return build(KafkaSettings, values, {})


def topics_from_env(environ: Mapping[str, str]) -> Topics:
    env = Env(environ)
    values: dict[str, Any] = {
        "messages": env.get("UPLINK_TOPIC_MESSAGES", str),
        "quarantine": env.get("UPLINK_TOPIC_QUARANTINE", str),
        "media": env.get("UPLINK_TOPIC_MEDIA", str),
        "statuses": env.get("UPLINK_TOPIC_STATUSES", str),
        "meta_events": env.get("UPLINK_TOPIC_META_EVENTS", str),
        "dlq_pattern": env.get("UPLINK_TOPIC_DLQ", str),
        "messages_partitions": env.get("UPLINK_MESSAGES_PARTITIONS", int),
        "partitions": env.get("UPLINK_TOPIC_PARTITIONS", int),
        "replication_factor": env.get("UPLINK_REPLICATION_FACTOR", int),
    }
    topics = build(Topics, values, {})
    positive("UPLINK_MESSAGES_PARTITIONS", topics.messages_partitions)
    positive("UPLINK_TOPIC_PARTITIONS", topics.partitions)
    positive("UPLINK_REPLICATION_FACTOR", topics.replication_factor)
    return topics


class Env:
    """Typed reads of environment variables; an unparsable value names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str, parse: Callable[[str], T]) -> T | None:
        raw = self._environ.get(name)
        if raw is None or raw == "":
            return None
        try:
            return parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(name, f"cannot parse {raw!r}: {exc}") from None


def build(cls: Callable[..., T], values: Mapping[str, Any], explicit: Mapping[str, Any]) -> T:
    """``cls`` from what the environment set (``values``; None: not set), explicit values
    winning over it; what neither sets keeps its default."""
    given = {**values, **{k: v for k, v in explicit.items() if v is not None}}
    return cls(**{k: v for k, v in given.items() if v is not None})


def boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(name, f"must be > 0, got {value}")


@dataclass(frozen=True)
class CommitPolicy:
    """When a worker commits what its handler made durable: after ``every`` records handled
    (None: never by count) or ``interval`` seconds since the last commit, whichever comes first.
    Each worker declares its default (``COMMITS`` in its package); ``UPLINK_COMMIT_EVERY`` and
    ``UPLINK_COMMIT_INTERVAL`` override it."""

    every: int | None = 1000
    interval: float = 5.0


@dataclass(frozen=True)
class WorkerSettings:
    """What every consumer-group worker shares; the worker's own settings sit beside it."""

    name: str  # archive, media, router: names the group (uplink-<name>) and the DLQ
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: Topics = field(default_factory=Topics)
    group_id: str | None = None  # default: uplink-<name>
    commit_every: int | None = 1000  # records handled since the last commit (None: by time only)
    commit_interval: float = 5.0  # seconds since the last commit (monotonic clock)
    dedupe_window_ms: int = 3_600_000  # 1 h of record time, far past the provider's ~9 min retries
    max_batch: int = 500  # records fetched per poll
    retry_backoff: float = 0.5  # first delay after a transient failure, doubling
    retry_backoff_max: float = 30.0
    metrics_port: int | None = None  # Prometheus text on this port when set
    # How long a silent (crashed) member keeps its partitions before the group rebalances.
    session_timeout: float = 10.0
    # Set: writer schemas are looked up there by id; a worker that writes (media) registers its
    # own schema and writes the Confluent framing.
    registry: RegistrySettings | None = None

    def __post_init__(self) -> None:
        positive("UPLINK_SESSION_TIMEOUT", self.session_timeout)
        if self.commit_every is not None:
            positive("UPLINK_COMMIT_EVERY", self.commit_every)
        positive("UPLINK_COMMIT_INTERVAL", self.commit_interval)
        positive("UPLINK_DEDUPE_WINDOW", self.dedupe_window_ms)
        positive("UPLINK_MAX_BATCH", self.max_batch)

    @property
    def group(self) -> str:
        return self.group_id or f"uplink-{self.name}"

    @property
    def dlq(self) -> str:
        return self.topics.dlq(self.name)

    @classmethod
    def from_env(
        cls,
        name: str,
        environ: Mapping[str, str],
        commits: CommitPolicy = CommitPolicy(),
        **explicit: Any,
    ) -> WorkerSettings:
        """Settings of worker ``name``: ``explicit`` wins over ``environ``, which wins over the
        worker's commit policy ``commits`` and the defaults."""
        env = Env(environ)
        window = env.get("UPLINK_DEDUPE_WINDOW", float)  # seconds, as operators think of it
        values: dict[str, Any] = {
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "group_id": env.get("UPLINK_GROUP_ID", str),
            "dedupe_window_ms": int(window * 1000) if window is not None else None,
            "max_batch": env.get("UPLINK_MAX_BATCH", int),
            "metrics_port": env.get("UPLINK_METRICS_PORT", int),
            "session_timeout": env.get("UPLINK_SESSION_TIMEOUT", float),
            "registry": registry_from_env(environ),
        }
        values = {k: v for k, v in values.items() if v is not None}
        every = env.get("UPLINK_COMMIT_EVERY", int)
        interval = env.get("UPLINK_COMMIT_INTERVAL", float)
        values["commit_every"] = every if every is not None else commits.every  # None: by time
        values["commit_interval"] = interval if interval is not None else commits.interval
        values.update(explicit)
        return cls(name=name, **values)


@dataclass(frozen=True)
class LogSettings:
    """How every process logs: ``--log-level``/``--log-format`` win over the environment."""

    level: str = "INFO"
    format: str = "text"  # or json: one object per line

    def __post_init__(self) -> None:
        import logging

        from uplink.logs import FORMATS

        if not isinstance(logging.getLevelName(self.level.upper()), int):
            raise ConfigError("UPLINK_LOG_LEVEL", f"unknown log level {self.level!r} (--log-level)")
        if self.format not in FORMATS:
            raise ConfigError(
                "UPLINK_LOG_FORMAT", f"{self.format!r} is not one of {', '.join(FORMATS)}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> LogSettings:
        env = Env(environ)
        values: dict[str, Any] = {
            "level": env.get("UPLINK_LOG_LEVEL", str),
            "format": env.get("UPLINK_LOG_FORMAT", str),
        }
        return build(cls, values, explicit)
