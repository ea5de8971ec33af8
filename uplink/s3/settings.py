"""Storage by URL: a path, or ``s3://bucket/prefix``; nothing else.

Endpoint, region and credentials come from the AWS SDKs' standard variables (``AWS_ENDPOINT_URL``,
``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ...), read
here from the environment mapping the CLI was handed; what they leave unset the client's own
chain fills in (web identity, ECS/EKS container credentials, the instance metadata service), as
for every other S3 client. Secrets are ``Secret``s: never in a repr or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from uplink.exceptions import ConfigError
from uplink.settings import Env, Secret, boolean

# AWS variables handed to the client as they are (its names, lower-cased, less the AWS_ prefix).
_PASSED = {
    "AWS_ROLE_ARN": "role_arn",
    "AWS_ROLE_SESSION_NAME": "role_session_name",
    "AWS_WEB_IDENTITY_TOKEN_FILE": "web_identity_token_file",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "container_credentials_relative_uri",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI": "container_credentials_full_uri",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": "container_authorization_token_file",
    "AWS_STS_ENDPOINT": "sts_endpoint",
}


@dataclass(frozen=True)
class S3Settings:
    """How to reach the S3 API: endpoint, region, credentials, addressing."""

    endpoint: str | None = None  # AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL; None: AWS itself
    region: str = "us-east-1"  # AWS_REGION, AWS_DEFAULT_REGION
    access_key_id: str | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    # Path-style (https://host/bucket/key) instead of virtual-hosted (https://bucket.host/key):
    # what most self-hosted stores need. Default: path-style with an endpoint, else virtual.
    path_style: bool | None = None
    passed: tuple[tuple[str, str], ...] = field(default=())  # the credential chain's own

    def __post_init__(self) -> None:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ConfigError("AWS_ENDPOINT_URL", f"{self.endpoint!r} is not an http(s):// URL")
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
        env = Env(environ)
        endpoint = env.get("AWS_ENDPOINT_URL_S3", str) or env.get("AWS_ENDPOINT_URL", str)
        region = env.get("AWS_REGION", str) or env.get("AWS_DEFAULT_REGION", str)
        passed = tuple(
            (name, value)
            for variable, name in _PASSED.items()
            if (value := env.get(variable, str)) is not None
        )
        return cls(
            endpoint=endpoint,
            region=region or "us-east-1",
            access_key_id=env.get("AWS_ACCESS_KEY_ID", str),
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY", Secret),
            session_token=env.get("AWS_SESSION_TOKEN", Secret),
            path_style=env.get("UPLINK_S3_PATH_STYLE", boolean),
            passed=passed,
        )


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
