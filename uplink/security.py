"""Kafka client security, built in one place: the TLS context, the SASL options and the token
provider every aiokafka client of a process is given (``KafkaSettings.client_options``).

``check`` refuses a half-set configuration at start-up, naming the setting that is missing;
``client_security`` turns the settings into aiokafka's keyword arguments.
"""

from __future__ import annotations

import importlib.util
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uplink.exceptions import ConfigError

if TYPE_CHECKING:
    from uplink.settings import KafkaSettings

_PREFIX = "UPLINK_KAFKA_"
_PASSWORDS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def check(settings: KafkaSettings) -> None:
    """Raise a ConfigError naming the first setting a half-set configuration lacks."""
    protocol, mechanism = settings.security_protocol, settings.sasl_mechanism
    sasl, tls = protocol.startswith("SASL_"), protocol.endswith("SSL")
    if sasl and mechanism is None:
        raise ConfigError(f"{_PREFIX}SASL_MECHANISM", f"{protocol} needs a SASL mechanism")
    if mechanism is not None and not sasl:
        raise ConfigError(
            f"{_PREFIX}SECURITY_PROTOCOL",
            f"SASL mechanism {mechanism} needs SASL_SSL or SASL_PLAINTEXT, not {protocol}",
        )
    needed: list[tuple[str, object]] = []
    if mechanism in _PASSWORDS:
        needed = [
            ("SASL_USERNAME", settings.sasl_username),
            ("SASL_PASSWORD", settings.sasl_password),
        ]
    elif mechanism == "OAUTHBEARER":
        needed = [
            ("SASL_OAUTH_TOKEN_URL", settings.oauth_token_url),
            ("SASL_OAUTH_CLIENT_ID", settings.oauth_client_id),
            ("SASL_OAUTH_CLIENT_SECRET", settings.oauth_client_secret),
        ]
    elif mechanism == "AWS_MSK_IAM":
        needed = [("AWS_REGION", settings.aws_region)]
        if importlib.util.find_spec("aws_msk_iam_sasl_signer") is None:
            raise ConfigError(
                f"{_PREFIX}SASL_MECHANISM",
                "AWS_MSK_IAM needs the AWS MSK IAM signer: pip install 'uplink[msk]'",
            )
    for name, value in needed:
        if value is None:
            raise ConfigError(f"{_PREFIX}{name}", f"SASL {mechanism} needs it")
    files = [
        ("SSL_CAFILE", settings.ssl_cafile),
        ("SSL_CERTFILE", settings.ssl_certfile),
        ("SSL_KEYFILE", settings.ssl_keyfile),
        ("SSL_KEY_PASSWORD", settings.ssl_key_password),
    ]
    for name, value in files:
        if value is not None and not tls:
            raise ConfigError(
                f"{_PREFIX}{name}", f"TLS settings need SSL or SASL_SSL, not {protocol}"
            )
    if settings.ssl_certfile is None:
        for name, value in files[2:]:
            if value is not None:
                raise ConfigError(f"{_PREFIX}SSL_CERTFILE", f"{_PREFIX}{name} needs a certificate")
    if tls:
        ssl_context(settings)  # files that cannot be read stop start-up here, named


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """Verifying (the hostname too, unless turned off), with the client certificate when set;
    a file that cannot be loaded is a ConfigError naming its setting."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_cafile is not None:
        try:
            context.load_verify_locations(cafile=settings.ssl_cafile)
        except (OSError, ssl.SSLError) as exc:
            problem = f"cannot load {settings.ssl_cafile}: {exc}"
            raise ConfigError(f"{_PREFIX}SSL_CAFILE", problem) from None
    if settings.ssl_certfile is not None:
        password = settings.ssl_key_password
        try:
            context.load_cert_chain(
                settings.ssl_certfile,
                settings.ssl_keyfile,
                password=password.reveal() if password is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            # Which file: a key that does not match, or a wrong password, is the key's.
            named = "SSL_KEYFILE" if settings.ssl_keyfile else "SSL_CERTFILE"
            if password is not None and _encrypted(settings.ssl_keyfile or settings.ssl_certfile):
                named = "SSL_KEY_PASSWORD"
            raise ConfigError(
                f"{_PREFIX}{named}", f"cannot load the client certificate and key: {exc}"
            ) from None
    return context


def _encrypted(path: str) -> bool:
    """A PEM file with an encrypted private key (then a load that fails is the password's)."""
    try:
        return b"ENCRYPTED" in Path(path).read_bytes()
    except OSError:
        return False


def client_security(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka's security keyword arguments for ``settings`` (already checked)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol.endswith("SSL"):
        options["ssl_context"] = ssl_context(settings)
    mechanism = settings.sasl_mechanism
    if mechanism in _PASSWORDS:
        assert settings.sasl_password is not None
        options["sasl_mechanism"] = mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.reveal()
    elif mechanism == "OAUTHBEARER":
        from uplink.tokens import OidcTokens

        assert settings.oauth_token_url and settings.oauth_client_id
        assert settings.oauth_client_secret is not None
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = OidcTokens(
            settings.oauth_token_url,
            settings.oauth_client_id,
            settings.oauth_client_secret,
            settings.oauth_scope,
        )
    elif mechanism == "AWS_MSK_IAM":
        from uplink.tokens import MskIamTokens

        assert settings.aws_region is not None
        # MSK's IAM mechanism is OAUTHBEARER on the wire, with a signed URL as the token.
        options["sasl_mechanism"] = "OAUTHBEARER"
        options["sasl_oauth_token_provider"] = MskIamTokens(settings.aws_region)
    return options
