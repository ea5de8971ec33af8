"""Frozen settings, built once at the edge from the environment and CLI flags.

Each field an environment variable fills declares it (``uplink.variables``): name, kind, default,
readers, meaning and valid values, once. The environment is read through those declarations,
by the settings classes; the rest of the code receives a settings object. Explicit values (CLI
flags, keyword arguments) win over the environment, which wins over defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from uplink.exceptions import ConfigError
from uplink.variables import (
    ALL,
    BASE_URL,
    BOOLEAN,
    BYTES,
    INGRESS,
    INTEGER,
    MILLISECONDS,
    PATH,
    SECONDS,
    SECRET,
    SECRETS,
    TEXT,
    UPPER,
    URL,
    WORKERS,
    Secret,
    at_least_zero,
    declaration,
    http_url,
    positive,
    read,
    validate,
    variable,
)

__all__ = [
    "GRAPH_URL",
    "GRAPH_VERSION",
    "CommitPolicy",
    "IngressSettings",
    "KafkaSettings",
    "LogSettings",
    "MetaSettings",
    "MiB",
    "RegistrySettings",
    "Secret",
    "Topics",
    "WorkerSettings",
    "kafka_from_env",
    "meta_from_env",
    "registry_from_env",
    "topics_from_env",
]

MiB = 1024 * 1024

# Every command that talks to Kafka but ``archive cat`` (which reads files only) reads the
# topic names; ``replay`` is told its topic.
_TOPIC_READERS = ("ingress", "archive", "media", "router", "topics", "console")
# The processes that watch the cluster and log its loss once (uplink/reachability.py).
_OUTAGE_READERS = ("ingress", "archive", "media", "router")
# Who reads records or writes them with a registry's framing.
_REGISTRY_READERS = ("ingress", "archive", "media", "router", "replay", "console")


@dataclass(frozen=True)
class Topics:
    """Topic names (contract defaults) and how to create them when missing."""

    messages: str = variable(
        "UPLINK_TOPIC_MESSAGES",
        TEXT,
        _TOPIC_READERS,
        "the valid pushes' topic",
        default="uplink.messages.v1",
    )
    quarantine: str = variable(
        "UPLINK_TOPIC_QUARANTINE",
        TEXT,
        _TOPIC_READERS,
        "the topic of bodies that are not pushes (raw bytes, the reason in headers)",
        default="uplink.quarantine.v1",
    )
    media: str = variable(
        "UPLINK_TOPIC_MEDIA",
        TEXT,
        _TOPIC_READERS,
        "the media worker's fetched-media events",
        default="uplink.media.v1",
    )
    statuses: str = variable(
        "UPLINK_TOPIC_STATUSES",
        TEXT,
        _TOPIC_READERS,
        "Meta's statuses of the messages sent (partitioned as the messages topic)",
        default="uplink.statuses.v1",
    )
    meta_events: str = variable(
        "UPLINK_TOPIC_META_EVENTS",
        TEXT,
        _TOPIC_READERS,
        "Meta's other webhook fields",
        default="uplink.meta.events.v1",
    )
    messages_partitions: int = variable(
        "UPLINK_MESSAGES_PARTITIONS",
        INTEGER,
        _TOPIC_READERS,
        "partitions of the messages and statuses topics when uplink creates them",
        default=12,
        check=positive,
    )
    partitions: int = variable(
        "UPLINK_TOPIC_PARTITIONS",
        INTEGER,
        _TOPIC_READERS,
        "partitions of the other topics when uplink creates them",
        default=3,
        check=positive,
    )
    replication_factor: int = variable(
        "UPLINK_REPLICATION_FACTOR",
        INTEGER,
        _TOPIC_READERS,
        "replication of created topics; with 3 or more, `min.insync.replicas=2` is set",
        default=1,
        check=positive,
    )
    dlq_pattern: str = variable(
        "UPLINK_TOPIC_DLQ",
        TEXT,
        _TOPIC_READERS,
        "the dead-letter topics' pattern",
        default="uplink.{worker}.dlq.v1",
    )
    redrive_pattern: str = variable(
        "UPLINK_TOPIC_REDRIVE",
        TEXT,
        _TOPIC_READERS,
        "the re-drive topics' pattern (`uplink dlq redrive` copies dead letters there)",
        default="uplink.{worker}.redrive.v1",
    )

    def __post_init__(self) -> None:
        validate(self)

    def dlq(self, worker: str) -> str:
        return self.dlq_pattern.format(worker=worker)

    def redrive(self, worker: str) -> str:
        return self.redrive_pattern.format(worker=worker)


def _servers(text: str) -> str | None:
    if not text.strip():
        return "must name at least one host:port"
    for server in text.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            return f"{server!r} is not host:port"
    return None


_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM")


def _protocol(value: str) -> str | None:
    return None if value in _PROTOCOLS else f"{value!r} is not one of {sorted(_PROTOCOLS)}"


def _mechanism(value: str) -> str | None:
    return None if value in MECHANISMS else f"{value!r} is not one of {', '.join(MECHANISMS)}"


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the cluster; shared by every producer, consumer and admin client."""

    bootstrap_servers: str = variable(
        "KAFKA_BOOTSTRAP_SERVERS",
        TEXT,
        ALL,
        "comma-separated `host:port` list; `uplink dev` starts a local broker when it is unset",
        default="127.0.0.1:9092",
        check=_servers,
    )
    client_id: str = variable(
        "UPLINK_KAFKA_CLIENT_ID", TEXT, ALL, "the Kafka client id", default="uplink"
    )
    security_protocol: str = variable(
        "UPLINK_KAFKA_SECURITY_PROTOCOL",
        UPPER,
        ALL,
        "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
        default="PLAINTEXT",
        check=_protocol,
    )
    sasl_mechanism: str | None = variable(
        "UPLINK_KAFKA_SASL_MECHANISM",
        UPPER,
        ALL,
        "with SASL_*: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (with the user and password), "
        "OAUTHBEARER (with the token URL, client id and secret) or AWS_MSK_IAM (the AWS SDK's "
        "credentials; `pip install uplink[msk]`)",
        default=None,
        check=_mechanism,
    )
    sasl_username: str | None = variable(
        "UPLINK_KAFKA_SASL_USERNAME", TEXT, ALL, "the SASL user (PLAIN, SCRAM)", default=None
    )
    sasl_password: Secret | None = variable(
        "UPLINK_KAFKA_SASL_PASSWORD", SECRET, ALL, "the SASL password (PLAIN, SCRAM)", default=None
    )
    oauth_token_url: str | None = variable(
        "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL",
        URL,
        ALL,
        "OAUTHBEARER: the OIDC token endpoint (client-credentials grant)",
        default=None,
        check=http_url,
    )
    oauth_client_id: str | None = variable(
        "UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID",
        TEXT,
        ALL,
        "OAUTHBEARER: the client id at the token endpoint",
        default=None,
    )
    oauth_client_secret: Secret | None = variable(
        "UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET",
        SECRET,
        ALL,
        "OAUTHBEARER: the client secret at the token endpoint",
        default=None,
    )
    oauth_scope: str | None = variable(
        "UPLINK_KAFKA_SASL_OAUTH_SCOPE",
        TEXT,
        ALL,
        "OAUTHBEARER: the scope to ask for (space-separated)",
        default=None,
        shown="none asked",
    )
    aws_region: str | None = variable(
        "UPLINK_KAFKA_AWS_REGION",
        TEXT,
        ALL,
        "AWS_MSK_IAM: the cluster's region",
        default=None,
        shown="`AWS_REGION`, else `AWS_DEFAULT_REGION` (the AWS SDK's)",
    )
    ssl_cafile: str | None = variable(
        "UPLINK_KAFKA_SSL_CAFILE",
        PATH,
        ALL,
        "a CA bundle to trust for SSL",
        default=None,
        shown="system CAs",
    )
    ssl_certfile: str | None = variable(
        "UPLINK_KAFKA_SSL_CERTFILE",
        PATH,
        ALL,
        "the client certificate (PEM, its chain after it; the key too, when no key file)",
        default=None,
        shown="none (no client certificate)",
    )
    ssl_keyfile: str | None = variable(
        "UPLINK_KAFKA_SSL_KEYFILE",
        PATH,
        ALL,
        "the client certificate's private key (PEM)",
        default=None,
        shown="in the certificate file",
    )
    ssl_key_password: Secret | None = variable(
        "UPLINK_KAFKA_SSL_KEY_PASSWORD",
        SECRET,
        ALL,
        "the password of an encrypted private key",
        default=None,
    )
    ssl_check_hostname: bool = variable(
        "UPLINK_KAFKA_SSL_CHECK_HOSTNAME",
        BOOLEAN,
        ALL,
        "false: trust a broker certificate whose names do not match its address (tests only)",
        default=True,
    )
    # A push is at most max_body_bytes of raw JSON plus its typed view: leave room for both.
    max_request_size: int = variable(
        "UPLINK_KAFKA_MAX_REQUEST_SIZE",
        BYTES,
        ALL,
        "the producer's largest request; it must hold a record with the body twice (raw, typed)",
        default=4 * MiB,
        check=positive,
    )
    unreachable_after: float = variable(
        "UPLINK_KAFKA_UNREACHABLE_AFTER",
        SECONDS,
        _OUTAGE_READERS,
        "how long without an answer from any broker before the cluster counts as lost: the "
        "ingress answers pushes 503 at once, and every process logs it once",
        default=3.0,
        check=positive,
    )
    outage_reminder: float = variable(
        "UPLINK_OUTAGE_REMINDER",
        SECONDS,
        _OUTAGE_READERS,
        "seconds between the log's reminders while Kafka is lost",
        default=60.0,
        check=positive,
    )

    def __post_init__(self) -> None:
        validate(self)
        from uplink.security import check

        check(self)

    @cached_property
    def _security(self) -> dict[str, Any]:
        # Built once per settings: one token provider, whose token every client reuses.
        from uplink.security import client_security

        return client_security(self)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes: the address and the security (TLS,
        SASL, the token provider) of ``uplink.security``, the one place that builds them."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            **self._security,
        }


GRAPH_URL = "https://graph.facebook.com"
GRAPH_VERSION = "v23.0"


def _version(value: str) -> str | None:
    if not value.strip() or "/" in value:
        return f"{value!r} is not a version like v23.0"
    return None


@dataclass(frozen=True)
class MetaSettings:
    """Meta's WhatsApp Cloud API: the webhook's secrets (the ingress) and the Graph API (the
    media worker). The webhook is on when an app secret is set."""

    verify_token: Secret | None = variable(
        "UPLINK_META_VERIFY_TOKEN",
        SECRET,
        INGRESS,
        "the token of Meta's subscription handshake (`hub.verify_token`)",
        default=None,
    )
    app_secrets: tuple[Secret, ...] = variable(
        "UPLINK_META_APP_SECRET",
        SECRETS,
        INGRESS,
        "the app secrets `X-Hub-Signature-256` is checked with, comma-separated while rotating; "
        "set: `/v1/meta` is served (set the verify token too)",
        default=(),
        shown="unset (no `/v1/meta`)",
    )
    access_token: Secret | None = variable(
        "UPLINK_META_ACCESS_TOKEN",
        SECRET,
        ("media",),
        "Graph API bearer token, for Meta's media by id (without it, such a record is "
        "dead-lettered saying so)",
        default=None,
    )
    graph_url: str = variable(
        "UPLINK_META_GRAPH_URL",
        URL,
        ("media",),
        "where media ids are resolved: `GET {url}/{version}/{media-id}`",
        default=GRAPH_URL,
        check=http_url,
    )
    graph_version: str = variable(
        "UPLINK_META_GRAPH_VERSION",
        TEXT,
        ("media",),
        "the Graph API version",
        default=GRAPH_VERSION,
        check=_version,
    )
    media_url_ttl: float = variable(
        "UPLINK_META_MEDIA_URL_TTL",
        SECONDS,
        ("media",),
        "how long a resolved media URL is used before the id is resolved again",
        default=300.0,
        check=positive,
    )

    def __post_init__(self) -> None:
        validate(self)

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
    return read(MetaSettings, environ)


def _registry_url(value: str) -> str | None:
    if not value.startswith(("http://", "https://")):
        return f"{value!r} is not an http(s) URL"
    return None


@dataclass(frozen=True)
class RegistrySettings:
    """A Confluent-compatible schema registry: where it is, how to log in and which
    certificates to trust. ``url`` is the API's base (Apicurio's
    ``http://host:8080/apis/ccompat/v7``, Confluent's ``http://host:8081``)."""

    url: str = variable(
        "UPLINK_SCHEMA_REGISTRY_URL",
        BASE_URL,
        _REGISTRY_READERS,
        "the registry's Confluent-compatible API; set: records carry the Confluent framing "
        "and writers register their schemas",
        shown="unset (single-object encoding)",
        check=_registry_url,
    )
    username: str | None = variable(
        "UPLINK_SCHEMA_REGISTRY_USERNAME",
        TEXT,
        _REGISTRY_READERS,
        "HTTP basic auth's user (with the password)",
        default=None,
    )
    password: Secret | None = variable(
        "UPLINK_SCHEMA_REGISTRY_PASSWORD",
        SECRET,
        _REGISTRY_READERS,
        "HTTP basic auth's password (with the user)",
        default=None,
    )
    ca_file: str | None = variable(
        "UPLINK_SCHEMA_REGISTRY_CA_FILE",
        PATH,
        _REGISTRY_READERS,
        "a PEM bundle to trust for an https registry",
        default=None,
        shown="system CAs",
    )
    verify: bool = variable(
        "UPLINK_SCHEMA_REGISTRY_VERIFY",
        BOOLEAN,
        _REGISTRY_READERS,
        "false turns TLS verification off (a test registry only)",
        default=True,
    )
    timeout: float = variable(
        "UPLINK_SCHEMA_REGISTRY_TIMEOUT",
        SECONDS,
        _REGISTRY_READERS,
        "per registry request",
        default=5.0,
        check=positive,
    )

    def __post_init__(self) -> None:
        validate(self)
        if (self.username is None) != (self.password is None):
            raise ConfigError(
                "UPLINK_SCHEMA_REGISTRY_USERNAME",
                "basic auth needs both UPLINK_SCHEMA_REGISTRY_USERNAME and _PASSWORD",
            )


def registry_from_env(environ: Mapping[str, str]) -> RegistrySettings | None:
    """The registry settings, or None without a registry URL (single-object framing)."""
    if declaration(RegistrySettings, "url").read(environ) is None:
        return None
    return read(RegistrySettings, environ)


@dataclass(frozen=True)
class IngressSettings:
    """Everything the HTTP ingress needs."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: Topics = field(default_factory=Topics)
    token: Secret | None = variable(
        "UPLINK_TOKEN",
        SECRET,
        ("ingress", "console"),
        "the shared token the provider must send on `/v1/uplink` (the console reposts with it)",
        default=None,
        shown="unset (no auth)",
    )
    meta: MetaSettings = field(default_factory=MetaSettings)  # /v1/meta, when configured
    max_body_bytes: int = variable(
        "UPLINK_MAX_BODY_BYTES",
        BYTES,
        INGRESS,
        "larger bodies get 413",
        default=1 * MiB,
        check=positive,
    )
    produce_timeout: float = variable(
        "UPLINK_PRODUCE_TIMEOUT",
        SECONDS,
        INGRESS,
        "how long a push waits for the broker's ack before it gets 503",
        default=5.0,
        check=positive,
    )
    max_in_flight: int = variable(
        "UPLINK_MAX_IN_FLIGHT",
        INTEGER,
        INGRESS,
        "pushes awaiting an ack, per process; beyond this, 503 at once (shed)",
        default=4096,
        check=positive,
    )
    retry_after: int = variable(
        "UPLINK_RETRY_AFTER",
        INTEGER,
        INGRESS,
        "seconds, sent in `Retry-After` with every 503",
        default=5,
        check=positive,
    )
    # 0: while a produce request is in flight, the next batch fills anyway (docs/benchmarks.md).
    linger_ms: int = variable(
        "UPLINK_LINGER_MS",
        INTEGER,
        INGRESS,
        "the producer's batching window, milliseconds",
        default=0,
        check=at_least_zero,
    )
    # Per partition. aiokafka keeps one produce request in flight per broker, so under load
    # the batch size, not the linger, bounds how many pushes one round trip can acknowledge.
    batch_bytes: int = variable(
        "UPLINK_BATCH_BYTES",
        BYTES,
        INGRESS,
        "the producer's batch size per partition",
        default=256 * 1024,
        check=positive,
    )
    create_topics: bool = variable(
        "UPLINK_CREATE_TOPICS",
        BOOLEAN,
        INGRESS,
        "create missing topics at start-up (workers always create the topics they use)",
        default=True,
    )
    # Set: the push schema is registered at start-up and records carry the Confluent framing.
    registry: RegistrySettings | None = None

    def __post_init__(self) -> None:
        self.meta.check_webhook()
        validate(self)
        if self.max_body_bytes * 2 + 64 * 1024 > self.kafka.max_request_size:
            raise ConfigError(
                "UPLINK_MAX_BODY_BYTES",
                "a record holds the body twice (raw and typed): "
                "raise UPLINK_KAFKA_MAX_REQUEST_SIZE too",
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> IngressSettings:
        """Settings from ``environ``; keyword arguments win over it."""
        parts = {
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "meta": meta_from_env(environ),
            "registry": registry_from_env(environ),
        }
        return read(cls, environ, given=parts, explicit=explicit)


def kafka_from_env(environ: Mapping[str, str]) -> KafkaSettings:
    from uplink.s3.settings import S3Settings

    # MSK IAM's region defaults to the AWS SDK's, whose variables the S3 settings declare.
    region = declaration(S3Settings, "region").read(environ)
    return read(KafkaSettings, environ, defaults={"aws_region": region} if region else None)


def topics_from_env(environ: Mapping[str, str]) -> Topics:
    return read(Topics, environ)


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
    group_id: str | None = variable(
        "UPLINK_GROUP_ID",
        TEXT,
        WORKERS,
        "the consumer group",
        default=None,
        shown="`uplink-<worker>`",
    )
    commit_every: int | None = variable(
        "UPLINK_COMMIT_EVERY",
        INTEGER,
        WORKERS,
        "commit after this many records handled (or the interval, whichever comes first)",
        default=1000,
        check=positive,
        shown="the worker's commit policy: media, router 1000; archive none (its files rotate)",
    )
    commit_interval: float = variable(
        "UPLINK_COMMIT_INTERVAL",
        SECONDS,
        WORKERS,
        "commit this long after the last commit (or the count, whichever comes first); "
        "the archive's `--flush-interval` wins",
        default=5.0,
        check=positive,
        shown="the worker's commit policy: media 5, router 0.5, archive 60",
    )
    dedupe_window_ms: int = variable(
        "UPLINK_DEDUPE_WINDOW",
        MILLISECONDS,
        WORKERS,
        "the dedupe window, in record time (far past the provider's ~9 min of retries)",
        default=3_600_000,
        shown="3600",
        check=positive,
    )
    max_batch: int = variable(
        "UPLINK_MAX_BATCH",
        INTEGER,
        WORKERS,
        "records fetched per poll",
        default=500,
        check=positive,
    )
    retry_backoff: float = 0.5  # first delay after a transient failure, doubling
    retry_backoff_max: float = 30.0
    metrics_port: int | None = variable(
        "UPLINK_METRICS_PORT",
        INTEGER,
        WORKERS,
        "serve Prometheus text on this port",
        default=None,
        flag="--metrics-port",
    )
    session_timeout: float = variable(
        "UPLINK_SESSION_TIMEOUT",
        SECONDS,
        WORKERS,
        "how long a silent (crashed) member keeps its partitions before the group rebalances",
        default=10.0,
        check=positive,
    )
    # Set: writer schemas are looked up there by id; a worker that writes (media) registers its
    # own schema and writes the Confluent framing.
    registry: RegistrySettings | None = None

    def __post_init__(self) -> None:
        validate(self)

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
        parts = {
            "name": name,
            "kafka": kafka_from_env(environ),
            "topics": topics_from_env(environ),
            "registry": registry_from_env(environ),
        }
        policy = {"commit_every": commits.every, "commit_interval": commits.interval}
        return read(cls, environ, defaults=policy, given=parts, explicit=explicit)


def _log_level(value: str) -> str | None:
    import logging

    if isinstance(logging.getLevelName(value.upper()), int):
        return None
    return f"unknown log level {value!r} (--log-level)"


def _log_format(value: str) -> str | None:
    from uplink.logs import FORMATS

    return None if value in FORMATS else f"{value!r} is not one of {', '.join(FORMATS)}"


@dataclass(frozen=True)
class LogSettings:
    """How every process logs: ``--log-level``/``--log-format`` win over the environment."""

    level: str = variable(
        "UPLINK_LOG_LEVEL",
        TEXT,
        ALL,
        "DEBUG, INFO, WARNING, ERROR",
        default="INFO",
        check=_log_level,
        flag="--log-level",
    )
    format: str = variable(
        "UPLINK_LOG_FORMAT",
        TEXT,
        ALL,
        "text, or json: one object per line, with fields such as topic, partition, offset",
        default="text",
        check=_log_format,
        flag="--log-format",
    )

    def __post_init__(self) -> None:
        validate(self)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> LogSettings:
        return read(cls, environ, explicit=explicit)
