"""The media worker's own settings (beside its WorkerSettings); see the README's table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from uplink.exceptions import ConfigError
from uplink.s3.settings import Location, location
from uplink.settings import (
    CommitPolicy,
    Env,
    MetaSettings,
    MiB,
    Secret,
    build,
    meta_from_env,
    positive,
)

# Downloads finish out of order and commit in order: by count and time, as the runtime's default.
COMMITS = CommitPolicy(every=1000, interval=5.0)


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

    root: Location  # a directory, or s3://bucket/prefix
    work_dir: Path | None = None  # downloads are spooled here before they go to a bucket
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
    # Meta's media by id: the Graph API and its access token (UPLINK_META_*).
    meta: MetaSettings = field(default_factory=MetaSettings)

    def __post_init__(self) -> None:
        positive("UPLINK_MEDIA_CONCURRENCY", self.concurrency)
        positive("UPLINK_MEDIA_PER_HOST", self.per_host)
        positive("UPLINK_MEDIA_MAX_PENDING", self.max_pending)
        positive("UPLINK_MEDIA_MAX_BYTES", self.max_bytes)
        positive("UPLINK_MEDIA_ATTEMPTS", self.retries.attempts)
        positive("UPLINK_MEDIA_HASH_ATTEMPTS", self.retries.hash_attempts)
        positive("UPLINK_MEDIA_CONNECT_TIMEOUT", self.timeouts.connect)
        positive("UPLINK_MEDIA_READ_TIMEOUT", self.timeouts.read)
        positive("UPLINK_MEDIA_ATTEMPT_TIMEOUT", self.timeouts.attempt)
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
        env = Env(environ)
        root = explicit.pop("root", None)
        if isinstance(root, str):  # --media-dir
            root = location(root, "--media-dir", environ)
        elif root is None:
            text = env.get("UPLINK_MEDIA_DIR", str)
            if text is None:
                raise ConfigError(
                    "UPLINK_MEDIA_DIR",
                    "the media worker needs a directory or s3://bucket/prefix (--media-dir)",
                )
            root = location(text, "UPLINK_MEDIA_DIR", environ)
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
            "meta": meta_from_env(environ),
            "work_dir": env.get("UPLINK_MEDIA_WORK_DIR", Path),
            "timeouts": MediaTimeouts(**{k: v for k, v in timeouts.items() if v is not None}),
            "retries": MediaRetries(**{k: v for k, v in retries.items() if v is not None}),
        }
        return build(cls, {"root": root, **values}, explicit)


def _hosts(text: str) -> frozenset[str]:
    return frozenset(host.strip().lower() for host in text.split(",") if host.strip())


def _header(text: str) -> tuple[str, Secret]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or not value.strip():
        raise ValueError("expected 'Header-Name: value'")
    return name.strip(), Secret(value.strip())
