"""Frozen settings, built once at the edge from the environment and CLI flags.

Everything that reads ``os.environ`` lives here; the rest of the code receives a settings object.
Explicit values (CLI flags, keyword arguments) win over the environment, which wins over defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
    messages_partitions: int = 12
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


@dataclass(frozen=True)
class IngressSettings:
    """Everything the HTTP ingress needs; see the README's configuration table."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: Topics = field(default_factory=Topics)
    token: Secret | None = None
    max_body_bytes: int = 1 * MiB
    produce_timeout: float = 5.0  # seconds until a push that is not acked gets 503
    max_in_flight: int = 4096  # pushes awaiting the broker; beyond this → 503 (shed)
    retry_after: int = 5  # seconds, sent with every 503
    # 0 measured best: while a produce request is in flight, the next batch fills anyway.
    linger_ms: int = 0
    # Per partition. aiokafka keeps one produce request in flight per broker, so under load
    # the batch size, not the linger, bounds how many pushes one round trip can acknowledge.
    batch_bytes: int = 256 * 1024
    create_topics: bool = True

    def __post_init__(self) -> None:
        _positive("UPLINK_MAX_BODY_BYTES", self.max_body_bytes)
        _positive("UPLINK_PRODUCE_TIMEOUT", self.produce_timeout)
        _positive("UPLINK_MAX_IN_FLIGHT", self.max_in_flight)
        _positive("UPLINK_RETRY_AFTER", self.retry_after)
        _positive("UPLINK_BATCH_BYTES", self.batch_bytes)
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
        env = _Env(environ)
        values: dict[str, Any] = {
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "token": env.get("UPLINK_TOKEN", Secret),
            "max_body_bytes": env.get("UPLINK_MAX_BODY_BYTES", int),
            "produce_timeout": env.get("UPLINK_PRODUCE_TIMEOUT", float),
            "max_in_flight": env.get("UPLINK_MAX_IN_FLIGHT", int),
            "retry_after": env.get("UPLINK_RETRY_AFTER", int),
            "linger_ms": env.get("UPLINK_LINGER_MS", int),
            "batch_bytes": env.get("UPLINK_BATCH_BYTES", int),
            "create_topics": env.get("UPLINK_CREATE_TOPICS", _boolean),
        }
        values.update(explicit)
        return cls(**{k: v for k, v in values.items() if v is not None})


def kafka_from_env(environ: Mapping[str, str]) -> KafkaSettings:
    env = _Env(environ)
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
    return KafkaSettings(**{k: v for k, v in values.items() if v is not None})


def topics_from_env(environ: Mapping[str, str]) -> Topics:
    env = _Env(environ)
    values: dict[str, Any] = {
        "messages": env.get("UPLINK_TOPIC_MESSAGES", str),
        "quarantine": env.get("UPLINK_TOPIC_QUARANTINE", str),
        "media": env.get("UPLINK_TOPIC_MEDIA", str),
        "dlq_pattern": env.get("UPLINK_TOPIC_DLQ", str),
        "messages_partitions": env.get("UPLINK_MESSAGES_PARTITIONS", int),
        "partitions": env.get("UPLINK_TOPIC_PARTITIONS", int),
        "replication_factor": env.get("UPLINK_REPLICATION_FACTOR", int),
    }
    topics = Topics(**{k: v for k, v in values.items() if v is not None})
    _positive("UPLINK_MESSAGES_PARTITIONS", topics.messages_partitions)
    _positive("UPLINK_TOPIC_PARTITIONS", topics.partitions)
    _positive("UPLINK_REPLICATION_FACTOR", topics.replication_factor)
    return topics


class _Env:
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


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(name, f"must be > 0, got {value}")


@dataclass(frozen=True)
class WorkerSettings:
    """What every consumer-group worker shares; the worker's own settings sit beside it."""

    name: str  # archive, media, router: names the group (uplink-<name>) and the DLQ
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: Topics = field(default_factory=Topics)
    group_id: str | None = None  # default: uplink-<name>
    commit_every: int = 1000  # records handled since the last commit
    commit_interval: float = 5.0  # seconds since the last commit (monotonic clock)
    dedupe_window_ms: int = 3_600_000  # 1 h of record time, far past the provider's ~9 min retries
    max_batch: int = 500  # records fetched per poll
    retry_backoff: float = 0.5  # first delay after a transient failure, doubling
    retry_backoff_max: float = 30.0
    metrics_port: int | None = None  # Prometheus text on this port when set
    # How long a silent (crashed) member keeps its partitions before the group rebalances.
    session_timeout: float = 10.0

    def __post_init__(self) -> None:
        _positive("UPLINK_SESSION_TIMEOUT", self.session_timeout)
        _positive("UPLINK_COMMIT_EVERY", self.commit_every)
        _positive("UPLINK_COMMIT_INTERVAL", self.commit_interval)
        _positive("UPLINK_DEDUPE_WINDOW", self.dedupe_window_ms)
        _positive("UPLINK_MAX_BATCH", self.max_batch)

    @property
    def group(self) -> str:
        return self.group_id or f"uplink-{self.name}"

    @property
    def dlq(self) -> str:
        return self.topics.dlq(self.name)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str], **explicit: Any) -> WorkerSettings:
        env = _Env(environ)
        window = env.get("UPLINK_DEDUPE_WINDOW", float)  # seconds, as operators think of it
        values: dict[str, Any] = {
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "group_id": env.get("UPLINK_GROUP_ID", str),
            "commit_every": env.get("UPLINK_COMMIT_EVERY", int),
            "commit_interval": env.get("UPLINK_COMMIT_INTERVAL", float),
            "dedupe_window_ms": int(window * 1000) if window is not None else None,
            "max_batch": env.get("UPLINK_MAX_BATCH", int),
            "metrics_port": env.get("UPLINK_METRICS_PORT", int),
            "session_timeout": env.get("UPLINK_SESSION_TIMEOUT", float),
        }
        values.update(explicit)
        return cls(name=name, **{k: v for k, v in values.items() if v is not None})


@dataclass(frozen=True)
class RouterSettings:
    """The router's own settings; its rules come from the rules file."""

    # Seconds before each re-delivery of a failed HTTP output; after the last, the DLQ.
    delays: tuple[float, ...] = (60.0, 300.0, 1800.0)
    # One delay topic per step (1, 2, ...), read by the retry loop.
    delay_pattern: str = "uplink.router.delay.{step}.v1"
    # Transactional ids are <prefix>.<topic>.<partition>: the owner of an input partition fences
    # whoever owned it before (default prefix: the group id).
    transactional_prefix: str | None = None
    # How long a commit waits for first HTTP attempts still in flight before parking them in the
    # first delay topic. Short: a hanging endpoint costs every commit this long. A parked attempt
    # that then succeeds is not re-delivered by the same process (and else carries the same
    # Idempotency-Key).
    flush_grace: float = 0.05

    def __post_init__(self) -> None:
        if not self.delays or any(d < 0 for d in self.delays):
            raise ConfigError("UPLINK_ROUTER_DELAYS", "needs one or more delays >= 0 (seconds)")
        if "{step}" not in self.delay_pattern:
            raise ConfigError("UPLINK_TOPIC_ROUTER_DELAY", "must contain {step}")
        if self.flush_grace < 0:
            raise ConfigError("UPLINK_ROUTER_FLUSH_GRACE", "must be >= 0")

    def delay_topic(self, step: int) -> str:
        """Step 1 is the first re-delivery."""
        return self.delay_pattern.format(step=step)

    @property
    def delay_topics(self) -> list[str]:
        return [self.delay_topic(step) for step in range(1, len(self.delays) + 1)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> RouterSettings:
        env = _Env(environ)
        values: dict[str, Any] = {
            "delays": env.get("UPLINK_ROUTER_DELAYS", _seconds_list),
            "delay_pattern": env.get("UPLINK_TOPIC_ROUTER_DELAY", str),
            "transactional_prefix": env.get("UPLINK_ROUTER_TRANSACTIONAL_ID", str),
            "flush_grace": env.get("UPLINK_ROUTER_FLUSH_GRACE", float),
        }
        values.update(explicit)
        return cls(**{k: v for k, v in values.items() if v is not None})


def _seconds_list(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())


@dataclass(frozen=True)
class MediaTimeouts:
    """Seconds. ``attempt`` bounds one whole download, so a server that drips bytes ends too."""

    connect: float = 5.0
    read: float = 30.0  # between two chunks
    attempt: float = 300.0


@dataclass(frozen=True)
class MediaRetries:
    """Timeouts, connection errors, 5xx and 429 are retried; the last failure goes to the DLQ."""

    attempts: int = 6  # in all, the first one included
    backoff: float = 1.0  # first delay, doubling, with jitter
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # a server's Retry-After beyond this waits this long
    hash_attempts: int = 2  # downloads whose sha256 does not match before the DLQ


@dataclass(frozen=True)
class MediaSettings:
    """The media worker's own settings (beside its WorkerSettings); see the README's table."""

    root: Path
    base_url: str | None = None  # a relative filePath is resolved against it
    concurrency: int = 32  # downloads in progress per worker (a sleeping retry holds none)
    per_host: int = 8  # of those, to one host
    # Records in flight per worker (downloading, waiting for a slot, or sleeping before a
    # retry): many more than downloads, so a failing host's retries do not fill them.
    max_pending: int = 1024
    max_bytes: int = 100 * MiB
    max_redirects: int = 5
    # Hosts allowed to resolve to private, loopback or link-local addresses (else refused).
    allow_hosts: frozenset[str] = frozenset()
    auth_header: tuple[str, Secret] | None = None  # e.g. ("Authorization", Secret("Bearer …"))
    auth_hosts: frozenset[str] = frozenset()  # where it is sent; default: base_url's host
    timeouts: MediaTimeouts = field(default_factory=MediaTimeouts)
    retries: MediaRetries = field(default_factory=MediaRetries)
    drain_timeout: float = 30.0  # at stop, seconds in-flight downloads get to finish

    def __post_init__(self) -> None:
        _positive("UPLINK_MEDIA_CONCURRENCY", self.concurrency)
        _positive("UPLINK_MEDIA_PER_HOST", self.per_host)
        _positive("UPLINK_MEDIA_MAX_PENDING", self.max_pending)
        _positive("UPLINK_MEDIA_MAX_BYTES", self.max_bytes)
        _positive("UPLINK_MEDIA_ATTEMPTS", self.retries.attempts)
        _positive("UPLINK_MEDIA_HASH_ATTEMPTS", self.retries.hash_attempts)
        _positive("UPLINK_MEDIA_CONNECT_TIMEOUT", self.timeouts.connect)
        _positive("UPLINK_MEDIA_READ_TIMEOUT", self.timeouts.read)
        _positive("UPLINK_MEDIA_ATTEMPT_TIMEOUT", self.timeouts.attempt)
        if self.max_redirects < 0:
            raise ConfigError("UPLINK_MEDIA_MAX_REDIRECTS", "must be >= 0")
        if self.drain_timeout < 0:
            raise ConfigError("UPLINK_MEDIA_DRAIN_TIMEOUT", "must be >= 0")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
                raise ConfigError("UPLINK_MEDIA_BASE_URL", f"{self.base_url!r} is not http(s)://")

    @property
    def auth_targets(self) -> frozenset[str]:
        """Hosts that get the auth header: never a host a redirect or a push chose."""
        if self.auth_hosts or self.base_url is None:
            return self.auth_hosts
        host = urlsplit(self.base_url).hostname
        return frozenset({host}) if host else frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> MediaSettings:
        env = _Env(environ)
        root = explicit.pop("root", None) or env.get("UPLINK_MEDIA_DIR", Path)
        if root is None:
            raise ConfigError(
                "UPLINK_MEDIA_DIR", "the media worker needs a directory (--media-dir)"
            )
        timeouts: dict[str, Any] = {
            "connect": env.get("UPLINK_MEDIA_CONNECT_TIMEOUT", float),
            "read": env.get("UPLINK_MEDIA_READ_TIMEOUT", float),
            "attempt": env.get("UPLINK_MEDIA_ATTEMPT_TIMEOUT", float),
        }
        retries: dict[str, Any] = {
            "attempts": env.get("UPLINK_MEDIA_ATTEMPTS", int),
            "backoff": env.get("UPLINK_MEDIA_BACKOFF", float),
            "backoff_max": env.get("UPLINK_MEDIA_BACKOFF_MAX", float),
            "retry_after_max": env.get("UPLINK_MEDIA_RETRY_AFTER_MAX", float),
            "hash_attempts": env.get("UPLINK_MEDIA_HASH_ATTEMPTS", int),
        }
        values: dict[str, Any] = {
            "base_url": env.get("UPLINK_MEDIA_BASE_URL", str),
            "concurrency": env.get("UPLINK_MEDIA_CONCURRENCY", int),
            "per_host": env.get("UPLINK_MEDIA_PER_HOST", int),
            "max_pending": env.get("UPLINK_MEDIA_MAX_PENDING", int),
            "max_bytes": env.get("UPLINK_MEDIA_MAX_BYTES", int),
            "max_redirects": env.get("UPLINK_MEDIA_MAX_REDIRECTS", int),
            "allow_hosts": env.get("UPLINK_MEDIA_ALLOW_HOSTS", _hosts),
            "auth_header": env.get("UPLINK_MEDIA_AUTH_HEADER", _header),
            "auth_hosts": env.get("UPLINK_MEDIA_AUTH_HOSTS", _hosts),
            "drain_timeout": env.get("UPLINK_MEDIA_DRAIN_TIMEOUT", float),
            "timeouts": MediaTimeouts(**{k: v for k, v in timeouts.items() if v is not None}),
            "retries": MediaRetries(**{k: v for k, v in retries.items() if v is not None}),
        }
        values.update(explicit)
        return cls(root=Path(root), **{k: v for k, v in values.items() if v is not None})


def _hosts(text: str) -> frozenset[str]:
    return frozenset(host.strip().lower() for host in text.split(",") if host.strip())


def _header(text: str) -> tuple[str, Secret]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise ValueError("expected 'Header-Name: value'")
    return name.strip(), Secret(value.strip())
