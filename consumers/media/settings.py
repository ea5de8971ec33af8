"""The media worker's own settings (beside its WorkerSettings)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from uplink.exceptions import ConfigError
from uplink.s3.settings import Location, location
from uplink.settings import CommitPolicy, MetaSettings, MiB, Secret, meta_from_env
from uplink.variables import (
    BYTES,
    DIRECTORY,
    HEADER,
    HOSTS,
    INTEGER,
    LOCATION,
    SECONDS,
    URL,
    at_least_zero,
    declaration,
    http_url,
    positive,
    read,
    validate,
    variable,
)

# Downloads finish out of order and commit in order: by count and time, as the runtime's default.
COMMITS = CommitPolicy(every=1000, interval=5.0)

MEDIA = ("media",)


@dataclass(frozen=True)
class MediaTimeouts:
    """Seconds. ``attempt`` bounds one whole download, so a server that drips bytes ends too."""

    connect: float = variable(
        "UPLINK_MEDIA_CONNECT_TIMEOUT",
        SECONDS,
        MEDIA,
        "to connect to a media server",
        default=5.0,
        check=positive,
    )
    read: float = variable(
        "UPLINK_MEDIA_READ_TIMEOUT",
        SECONDS,
        MEDIA,
        "between two chunks of a download",
        default=30.0,
        check=positive,
    )
    attempt: float = variable(
        "UPLINK_MEDIA_ATTEMPT_TIMEOUT",
        SECONDS,
        MEDIA,
        "for one whole download",
        default=300.0,
        check=positive,
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class MediaRetries:
    """Timeouts, connection errors, 5xx and 429 are retried; the last failure goes to the DLQ."""

    attempts: int = variable(
        "UPLINK_MEDIA_ATTEMPTS",
        INTEGER,
        MEDIA,
        "downloads of one record, the first included",
        default=6,
        check=positive,
    )
    backoff: float = variable(
        "UPLINK_MEDIA_BACKOFF",
        SECONDS,
        MEDIA,
        "the first delay before a retry, doubling, each drawn between half and all of it",
        default=1.0,
    )
    backoff_max: float = variable(
        "UPLINK_MEDIA_BACKOFF_MAX",
        SECONDS,
        MEDIA,
        "the longest delay before a retry",
        default=60.0,
    )
    retry_after_max: float = variable(
        "UPLINK_MEDIA_RETRY_AFTER_MAX",
        SECONDS,
        MEDIA,
        "a server's longer `Retry-After` waits this long",
        default=300.0,
    )
    hash_attempts: int = variable(
        "UPLINK_MEDIA_HASH_ATTEMPTS",
        INTEGER,
        MEDIA,
        "downloads whose sha256 does not match before the DLQ",
        default=2,
        check=positive,
    )

    def __post_init__(self) -> None:
        validate(self)


@dataclass(frozen=True)
class MediaSettings:
    """The media worker's own settings (beside its WorkerSettings)."""

    root: Location = variable(
        "UPLINK_MEDIA_DIR",
        LOCATION,
        ("media", "console"),
        "where objects are kept: a directory, or `s3://bucket/prefix`",
        shown="required",
        flag="--media-dir",
    )
    work_dir: Path | None = variable(
        "UPLINK_MEDIA_WORK_DIR",
        DIRECTORY,
        MEDIA,
        "with a bucket: downloads are spooled here before the put",
        default=None,
        shown="the system's temporary directory",
    )
    base_url: str | None = variable(
        "UPLINK_MEDIA_BASE_URL",
        URL,
        MEDIA,
        "a relative `filePath` is resolved against it",
        default=None,
        check=http_url,
    )
    concurrency: int = variable(
        "UPLINK_MEDIA_CONCURRENCY",
        INTEGER,
        MEDIA,
        "downloads in progress per worker (a sleeping retry holds none)",
        default=32,
        check=positive,
        flag="--concurrency",
    )
    per_host: int = variable(
        "UPLINK_MEDIA_PER_HOST",
        INTEGER,
        MEDIA,
        "of those, to one origin (scheme, host, port)",
        default=8,
        check=positive,
    )
    # Many more than downloads, so a failing host's retries do not fill them.
    max_pending: int = variable(
        "UPLINK_MEDIA_MAX_PENDING",
        INTEGER,
        MEDIA,
        "records in flight per worker: downloading, waiting for a slot, or sleeping before a retry",
        default=1024,
        check=positive,
    )
    max_bytes: int = variable(
        "UPLINK_MEDIA_MAX_BYTES",
        BYTES,
        MEDIA,
        "larger bodies go to the DLQ",
        default=100 * MiB,
        check=positive,
    )
    max_redirects: int = variable(
        "UPLINK_MEDIA_MAX_REDIRECTS",
        INTEGER,
        MEDIA,
        "more go to the DLQ",
        default=5,
        check=at_least_zero,
    )
    allow_hosts: frozenset[str] = variable(
        "UPLINK_MEDIA_ALLOW_HOSTS",
        HOSTS,
        MEDIA,
        "comma-separated hosts allowed to resolve to private, loopback or link-local addresses",
        default=frozenset(),
    )
    auth_header: tuple[str, Secret] | None = variable(
        "UPLINK_MEDIA_AUTH_HEADER",
        HEADER,
        MEDIA,
        "`Name: value` sent with downloads to the auth hosts",
        default=None,
    )
    auth_hosts: frozenset[str] = variable(
        "UPLINK_MEDIA_AUTH_HOSTS",
        HOSTS,
        MEDIA,
        "hosts that get the auth header; never a redirect's other host, never plain http "
        "after https",
        default=frozenset(),
        shown="the base URL's host",
    )
    timeouts: MediaTimeouts = field(default_factory=MediaTimeouts)
    retries: MediaRetries = field(default_factory=MediaRetries)
    drain_timeout: float = variable(
        "UPLINK_MEDIA_DRAIN_TIMEOUT",
        SECONDS,
        MEDIA,
        "at stop, how long in-flight downloads get to finish",
        default=30.0,
        check=at_least_zero,
    )
    # Meta's media by id: the Graph API and its access token (UPLINK_META_*).
    meta: MetaSettings = field(default_factory=MetaSettings)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def auth_targets(self) -> frozenset[str]:
        """Hosts that get the auth header: never a host a redirect or a push chose."""
        if self.auth_hosts or self.base_url is None:
            return self.auth_hosts
        host = urlsplit(self.base_url).hostname
        return frozenset({host}) if host else frozenset()

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> MediaSettings:
        root = explicit.pop("root", None)
        if isinstance(root, str):  # --media-dir
            root = location(root, "--media-dir", environ)
        elif root is None:
            declared = declaration(cls, "root")
            text = declared.read(environ)
            if text is None:
                raise ConfigError(
                    declared.name,
                    "the media worker needs a directory or s3://bucket/prefix (--media-dir)",
                )
            root = location(text, declared.name, environ)
        parts = {
            "root": root,
            "meta": meta_from_env(environ),
            "timeouts": read(MediaTimeouts, environ),
            "retries": read(MediaRetries, environ),
        }
        return read(cls, environ, given=parts, explicit=explicit)
