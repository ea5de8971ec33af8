"""Storage by URL: a path, or ``s3://bucket/prefix``; nothing else.

Endpoint, region and credentials come from the AWS SDKs' standard variables, declared here and
read from the environment mapping the CLI was handed; what they leave unset the client's own
chain fills in (web identity, ECS/EKS container credentials, the instance metadata service), as
for every other S3 client. Secrets are ``Secret``s: never in a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from uplink.exceptions import ConfigError
from uplink.variables import BOOLEAN, PATH, SECRET, TEXT, URL, Secret, read, validate, variable

# The processes that may read or write a bucket (the console reads the media store).
STORES = ("archive", "media", "replay", "console")


def _endpoint(value: str) -> str | None:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"{value!r} is not an http(s):// URL"
    return None


@dataclass(frozen=True)
class CredentialChain:
    """AWS variables handed to the client as they are: its field names are the client's."""

    role_arn: str | None = variable(
        "AWS_ROLE_ARN", TEXT, STORES, "web identity: the role to assume", default=None
    )
    role_session_name: str | None = variable(
        "AWS_ROLE_SESSION_NAME", TEXT, STORES, "web identity: the session's name", default=None
    )
    web_identity_token_file: str | None = variable(
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        PATH,
        STORES,
        "web identity: the token's file (EKS service accounts)",
        default=None,
    )
    container_credentials_relative_uri: str | None = variable(
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        TEXT,
        STORES,
        "ECS container credentials' path",
        default=None,
    )
    container_credentials_full_uri: str | None = variable(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        URL,
        STORES,
        "container credentials' URL (EKS Pod Identity)",
        default=None,
    )
    container_authorization_token_file: str | None = variable(
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        PATH,
        STORES,
        "the container credentials' authorization token file",
        default=None,
    )
    sts_endpoint: str | None = variable(
        "AWS_STS_ENDPOINT", URL, STORES, "the STS endpoint for web identity", default=None
    )

    def passed(self) -> tuple[tuple[str, str], ...]:
        """The variables set, as the client's (name, value) pairs."""
        return tuple((name, value) for name, value in vars(self).items() if value is not None)


@dataclass(frozen=True)
class S3Settings:
    """How to reach the S3 API: endpoint, region, credentials, addressing."""

    endpoint: str | None = variable(
        "AWS_ENDPOINT_URL_S3",
        URL,
        STORES,
        "the S3 API's endpoint, for any S3-compatible store (MinIO, Ceph, versitygw, ...)",
        default=None,
        shown="AWS S3",
        check=_endpoint,
        also=("AWS_ENDPOINT_URL",),
    )
    region: str = variable(
        "AWS_REGION",
        TEXT,
        STORES,
        "the bucket's region, for signing",
        default="us-east-1",
        also=("AWS_DEFAULT_REGION",),
    )
    access_key_id: str | None = variable(
        "AWS_ACCESS_KEY_ID",
        TEXT,
        STORES,
        "static credentials' key id (with the secret key)",
        default=None,
        shown="the credential chain",
    )
    secret_access_key: Secret | None = variable(
        "AWS_SECRET_ACCESS_KEY",
        SECRET,
        STORES,
        "static credentials' secret key (with the key id)",
        default=None,
        shown="the credential chain",
    )
    session_token: Secret | None = variable(
        "AWS_SESSION_TOKEN", SECRET, STORES, "temporary credentials' session token", default=None
    )
    # Path-style (https://host/bucket/key) instead of virtual-hosted (https://bucket.host/key):
    # what most self-hosted stores need.
    path_style: bool | None = variable(
        "UPLINK_S3_PATH_STYLE",
        BOOLEAN,
        STORES,
        "path-style addressing (host/bucket/key) instead of virtual-hosted (bucket.host/key)",
        default=None,
        shown="true with an endpoint, false on AWS",
    )
    passed: tuple[tuple[str, str], ...] = field(default=())  # the credential chain's own

    def __post_init__(self) -> None:
        validate(self)
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ConfigError(
                "AWS_SECRET_ACCESS_KEY",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set together or not at all",
            )

    @property
    def virtual_hosted(self) -> bool:
        if self.path_style is not None:
            return not self.path_style
        return self.endpoint is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> S3Settings:
        chain = read(CredentialChain, environ)
        return read(cls, environ, given={"passed": chain.passed()})


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``: where objects go, and how to reach the store."""

    bucket: str
    prefix: str  # no leading or trailing slash; may be empty
    s3: S3Settings = field(default_factory=S3Settings)

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the prefix."""
        return "/".join(part for part in (self.prefix, *parts) if part)

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


Location = Path | S3Location


def location(text: str, setting: str, environ: Mapping[str, str]) -> Location:
    """A storage URL: ``s3://bucket/prefix`` or a filesystem path (``file://`` too); any other
    scheme is refused, naming ``setting``."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        bucket = parts.netloc
        if not bucket or "@" in bucket or ":" in bucket:
            raise ConfigError(setting, f"{text!r}: expected s3://bucket/prefix")
        if parts.query or parts.fragment:
            raise ConfigError(setting, f"{text!r}: an S3 URL has no query or fragment")
        return S3Location(bucket, parts.path.strip("/"), S3Settings.from_env(environ))
    if scheme == "file":
        if parts.netloc not in {"", "localhost"}:
            raise ConfigError(setting, f"{text!r}: a file:// URL names no host")
        return Path(parts.path)
    if scheme:
        raise ConfigError(
            setting, f"{text!r}: unknown scheme {scheme!r} (a path, file:// or s3://bucket/prefix)"
        )
    return Path(text)
