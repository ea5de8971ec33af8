"""Kafka's refusals told apart from outages: ``refusal`` names the configuration error an
aiokafka error is (or None: transient), ``diagnose`` finds out why a client could not connect,
and ``Diagnosis`` asks that at most every few seconds for a process whose running clients
stopped hearing from Kafka.

aiokafka hides why a bootstrap failed ("Unable to bootstrap"): a refused password, a refused
client certificate and a broker that is down look the same. ``diagnose`` opens one connection
per bootstrap server itself and reads the answer: a SASL refusal, a TLS alert, an OAUTHBEARER
error status (which aiokafka does not read), or nothing of the kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Iterator
from typing import Any

from aiokafka.conn import AIOKafkaConnection, create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.protocol.admin import SaslAuthenticateRequest, SaslHandShakeRequest

from uplink.exceptions import AuthenticationRefused, AuthorizationRefused, KafkaRefused
from uplink.settings import KafkaSettings

_ACLS = 'docs/security.md, "ACLs"'
_AUTHORIZATIONS: dict[type[KafkaError], str] = {
    TopicAuthorizationFailedError: "a topic",
    GroupAuthorizationFailedError: "a consumer group",
    TransactionalIdAuthorizationFailed: "a transactional id",
    ClusterAuthorizationFailedError: "a cluster operation",
}


def refusal(exc: BaseException, settings: KafkaSettings | None = None) -> KafkaRefused | None:
    """The refusal ``exc`` (or an error it was raised from) is, or None."""
    for each in _chain(exc):
        if isinstance(each, KafkaRefused):
            return each
        if isinstance(each, (SaslAuthenticationFailed, AuthenticationFailedError)):
            return AuthenticationRefused(
                f"Kafka refused our credentials{_who(settings)}: {_said(each)}",
                _credentials(settings),
            )
        if isinstance(each, UnsupportedSaslMechanismError):
            return AuthenticationRefused(_said(each), "UPLINK_KAFKA_SASL_MECHANISM")
        for kind, what in _AUTHORIZATIONS.items():
            if isinstance(each, kind):
                return AuthorizationRefused(
                    f"Kafka refused access to {what}{_who(settings)}: {_said(each)}",
                    f"the principal's ACLs on {what[2:]} ({_ACLS})",
                )
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _said(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def _who(settings: KafkaSettings | None) -> str:
    if settings is None or settings.sasl_mechanism is None:
        return ""
    if settings.sasl_username is not None:
        return f" (SASL {settings.sasl_mechanism} as {settings.sasl_username!r})"
    return f" (SASL {settings.sasl_mechanism})"


def _credentials(settings: KafkaSettings | None) -> str:
    mechanism = settings.sasl_mechanism if settings is not None else None
    if mechanism == "OAUTHBEARER":
        return "the token the issuer of UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL gives (audience, scope)"
    if mechanism == "AWS_MSK_IAM":
        return "the AWS credentials' IAM policy (kafka-cluster:Connect) and UPLINK_KAFKA_AWS_REGION"
    return "UPLINK_KAFKA_SASL_USERNAME and UPLINK_KAFKA_SASL_PASSWORD"


async def diagnose(
    settings: KafkaSettings, timeout: float = 5.0, *, tls: bool = True
) -> KafkaRefused | None:
    """Why connecting failed, when Kafka refused us; None when no server refused (down,
    unreachable, slow: transient). ``tls``: False skips the TLS probe (the handshake is known
    to pass)."""
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                refused = await _probe(settings, host, int(port), tls)
        except TimeoutError:
            continue
        if refused is not None:
            return refused
    return None


class Diagnosis:
    """``diagnose`` for a running process whose broker stopped answering (its credentials
    rotated or revoked, or an outage): asked at most every ``every`` seconds, as each probe is
    a connection of its own; None when asked again sooner."""

    def __init__(self, settings: KafkaSettings, every: float = 5.0) -> None:
        self._settings = settings
        self._every = every
        self._asked: float | None = None

    async def __call__(self) -> KafkaRefused | None:
        now = asyncio.get_running_loop().time()
        if self._asked is not None and now - self._asked < self._every:
            return None
        self._asked = now
        return await diagnose(self._settings)


async def _probe(settings: KafkaSettings, host: str, port: int, tls: bool) -> KafkaRefused | None:
    options = settings.client_options()
    if tls and "ssl_context" in options:
        refused = await _tls(options["ssl_context"], host, port)
        if refused is not None:
            return refused
    if "sasl_mechanism" not in options:
        return None
    try:
        if options["sasl_mechanism"] == "OAUTHBEARER":
            return await _oauthbearer(settings, options, host, port)
        connection = await create_conn(host, port, **_connection(options))
    except (KafkaError, KafkaRefused) as exc:
        return refusal(exc, settings)
    except OSError:
        return None
    await _close(connection)
    return None


async def _close(connection: AIOKafkaConnection) -> None:
    """Close and wait (briefly) until the transport is gone: a TLS connection's shutdown takes
    a few turns of the loop, and a probe's caller may end the loop right after."""
    connection.close()
    closed = getattr(connection, "_closed_fut", None)  # aiokafka's: set on connection_lost
    if closed is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await asyncio.shield(closed)


def _connection(options: dict[str, Any]) -> dict[str, Any]:
    names = (
        *("client_id", "ssl_context", "security_protocol", "sasl_mechanism"),
        *("sasl_plain_username", "sasl_plain_password", "sasl_oauth_token_provider"),
    )
    return {name: options[name] for name in names if name in options}


async def _tls(context: ssl.SSLContext, host: str, port: int) -> KafkaRefused | None:
    """A TLS handshake and a moment's read: TLS 1.3 servers refuse a client certificate
    after the handshake, with an alert the first read raises."""
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=context)
    except ssl.SSLCertVerificationError as exc:
        return AuthenticationRefused(
            f"the broker's certificate at {host}:{port} is not trusted ({exc.verify_message})",
            "UPLINK_KAFKA_SSL_CAFILE (and UPLINK_KAFKA_SSL_CHECK_HOSTNAME)",
        )
    except ssl.SSLError as exc:
        return _tls_refused(exc, host, port)
    except OSError:
        return None
    try:
        with contextlib.suppress(TimeoutError):  # nothing to read: the handshake was accepted
            async with asyncio.timeout(0.5):
                await reader.read(1)
    except ssl.SSLError as exc:
        return _tls_refused(exc, host, port)
    except OSError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return None


def _tls_refused(exc: ssl.SSLError, host: str, port: int) -> KafkaRefused:
    return AuthenticationRefused(
        f"the broker at {host}:{port} refused the TLS handshake ({exc.reason or exc})",
        "UPLINK_KAFKA_SSL_CERTFILE and UPLINK_KAFKA_SSL_KEYFILE (a client certificate the "
        "broker's truststore trusts)",
    )


async def _oauthbearer(
    settings: KafkaSettings, options: dict[str, Any], host: str, port: int
) -> KafkaRefused | None:
    """The OAUTHBEARER exchange, reading the broker's answer (RFC 7628 3.2.2: an error is a
    JSON status in the server's challenge, not an error code)."""
    plain = dict(_connection(options), security_protocol=options["security_protocol"][5:])
    for name in ("sasl_mechanism", "sasl_oauth_token_provider"):
        plain.pop(name, None)
    connection = AIOKafkaConnection(host, port, **plain)
    await connection.connect()
    try:
        handshake = await connection.send(SaslHandShakeRequest("OAUTHBEARER"))
        error = for_code(handshake.error_code)
        if handshake.error_code or "OAUTHBEARER" not in handshake.enabled_mechanisms:
            return AuthenticationRefused(
                f"the broker does not take OAUTHBEARER ({error.__name__}; it takes "
                f"{', '.join(handshake.enabled_mechanisms)})",
                "UPLINK_KAFKA_SASL_MECHANISM",
            )
        token = await options["sasl_oauth_token_provider"].token()
        answer = await connection.send(
            SaslAuthenticateRequest(f"n,,\x01auth=Bearer {token}\x01\x01".encode())
        )
        said = answer.error_message or ""
        status = ""
        if answer.sasl_auth_bytes:
            with contextlib.suppress(ValueError):
                status = str(json.loads(answer.sasl_auth_bytes).get("status", ""))
        if answer.error_code or status:
            return AuthenticationRefused(
                f"Kafka refused our OAUTHBEARER token: {status or said or answer.error_code}",
                _credentials(settings),
            )
        return None
    finally:
        await _close(connection)
