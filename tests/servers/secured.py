"""A secured Kafka broker for the security tests: the local broker from the cached jars
(uplink/broker/local.py) with secured client listeners, an authorizer and a principal per use.

Listeners, all on 127.0.0.1:
- ``PLAINTEXT``: the broker's own and the tests' (principal ANONYMOUS, a super user): setting up
  ACLs and reading back what the components wrote;
- ``SASL`` (SASL_SSL): PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (SCRAM users made at format time);
- ``MTLS`` (SSL, ``ssl.client.auth=required``): the principal is the certificate's CN;
- ``EXPIRING`` (SASL_SSL SCRAM): sessions that end after ``SESSION_LIFETIME`` seconds, so a
  password changed on the broker (``set_password``) is asked for again within moments, as a
  cluster that re-authenticates its clients does;
- ``OAUTH`` (SASL_SSL OAUTHBEARER): Kafka's own OIDC validator against the JWKS of an
  ``IdentityProvider`` served on loopback; sessions end when their token expires
  (``connections.max.reauth.ms``), so clients must reconnect with a fresh token.

``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``: principals in ``SUPER``
may do anything, every other has exactly the ACLs a test gives it (``acls``).
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest

from tests.servers.identity import AUDIENCE, Client, IdentityProvider
from tests.servers.pki import Authority, Issued
from uplink.broker import BrokerSettings, LocalBroker, free_port
from uplink.broker.local import fetch_jars
from uplink.resources import BlockingResource

ADMIN = "admin"  # the SASL super user (PLAIN and both SCRAMs)
TLS_CLIENT = "tls-client"  # the super user's certificate CN on MTLS
OAUTH_CLIENT = "oauth-client"  # the OAuth super user's client id
SHORT_LIVED = "oauth-short"  # its tokens expire after SHORT_LIFETIME seconds
FORGED = "oauth-forged"  # its tokens are signed with a key the JWKS does not publish
SHORT_LIFETIME = 6.0
SESSION_LIFETIME = 5.0  # on the EXPIRING listener
SUPER = (ADMIN, TLS_CLIENT, OAUTH_CLIENT, SHORT_LIVED)

# Kafka's ACL enums (org.apache.kafka.common.acl, org.apache.kafka.common.resource).
RESOURCES = {"topic": 2, "group": 3, "cluster": 4, "transactional-id": 5}
PATTERNS = {"literal": 3, "prefixed": 4}
OPERATIONS = {
    "read": 3,
    "write": 4,
    "create": 5,
    "delete": 6,
    "alter": 7,
    "describe": 8,
    "idempotent-write": 12,
}
_ALLOW = 3


@dataclass(frozen=True)
class Acl:
    """One ALLOW ACL, as ``kafka-acls.sh`` says it: ``principal`` may ``operation`` on the
    ``resource`` named ``name`` (``pattern``: literal or prefixed)."""

    principal: str
    operation: str
    resource: str
    name: str
    pattern: str = "literal"

    def fields(self) -> tuple[int, str, int, str, str, int, int]:
        return (
            RESOURCES[self.resource],
            self.name,
            PATTERNS[self.pattern],
            f"User:{self.principal}",
            "*",
            OPERATIONS[self.operation],
            _ALLOW,
        )


class SecuredBroker(BlockingResource):
    """The broker, its certificates and its identity provider; ``users`` are SCRAM (and PLAIN)
    users beyond the admin, with their passwords."""

    def __init__(self, directory: Path, users: Iterable[str] = ()) -> None:
        self.directory = directory
        self.passwords = {name: secrets.token_urlsafe(12) for name in (ADMIN, *users)}
        self.ca = Authority(directory / "pki")
        self.server = self.ca.issue("127.0.0.1", server=True)
        self.key_password = "k3y-" + secrets.token_urlsafe(6)
        self.client = self.ca.issue(TLS_CLIENT, password=self.key_password.encode())
        self.stranger = Authority(directory / "other-pki", "another CA").issue(TLS_CLIENT)
        self.identity = IdentityProvider(
            {
                OAUTH_CLIENT: Client(secrets.token_urlsafe(12)),
                SHORT_LIVED: Client(secrets.token_urlsafe(12), lifetime=SHORT_LIFETIME),
                FORGED: Client(secrets.token_urlsafe(12), forged=True),
            }
        )
        self.port = free_port()
        self.sasl_port, self.mtls_port, self.oauth_port = free_port(), free_port(), free_port()
        self.expiring_port = free_port()
        self._broker: LocalBroker | None = None

    @property
    def plaintext(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _settings(self) -> BrokerSettings:
        plain_users = " ".join(f'user_{n}="{p}"' for n, p in self.passwords.items())
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        oauth = "org.apache.kafka.common.security.oauthbearer"
        controller = free_port()
        listeners = (
            f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller},"
            f"SASL://127.0.0.1:{self.sasl_port},MTLS://127.0.0.1:{self.mtls_port},"
            f"OAUTH://127.0.0.1:{self.oauth_port},EXPIRING://127.0.0.1:{self.expiring_port}"
        )
        overrides = {
            "listeners": listeners,
            "advertised.listeners": listeners,
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL:SASL_SSL,MTLS:SSL,OAUTH:SASL_SSL,"
                "EXPIRING:SASL_SSL"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.server.pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca.cafile),
            "ssl.principal.mapping.rules": "RULE:^CN=([^,]+)$/$1/,DEFAULT",
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.sasl.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "listener.name.sasl.plain.sasl.jaas.config": (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            ),
            "listener.name.sasl.scram-sha-256.sasl.jaas.config": scram,
            "listener.name.sasl.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.expiring.sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "listener.name.expiring.scram-sha-512.sasl.jaas.config": scram,
            "listener.name.expiring.connections.max.reauth.ms": str(int(SESSION_LIFETIME * 1000)),
            "listener.name.oauth.sasl.enabled.mechanisms": "OAUTHBEARER",
            "listener.name.oauth.oauthbearer.sasl.jaas.config": (
                f"{oauth}.OAuthBearerLoginModule required ;"
            ),
            "listener.name.oauth.oauthbearer.sasl.server.callback.handler.class": (
                f"{oauth}.OAuthBearerValidatorCallbackHandler"
            ),
            # A session lives as long as its token: an expired one is closed by the broker.
            "listener.name.oauth.oauthbearer.connections.max.reauth.ms": "3600000",
            "sasl.oauthbearer.jwks.endpoint.url": self.identity.jwks_url,
            "sasl.oauthbearer.expected.audience": AUDIENCE,
            "sasl.oauthbearer.expected.issuer": self.identity.issuer,
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": ";".join(f"User:{name}" for name in ("ANONYMOUS", *SUPER)),
        }
        scram_users = [
            f"{mechanism}=[name={name},password={password}]"
            for name, password in self.passwords.items()
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        ]
        return BrokerSettings(
            port=self.port,
            controller_port=controller,
            data_dir=self.directory / "kafka",
            overrides=tuple(overrides.items()),
            format_options=tuple(arg for user in scram_users for arg in ("--add-scram", user)),
            jvm_options=(
                f"-Dorg.apache.kafka.sasl.oauthbearer.allowed.urls={self.identity.jwks_url}",
            ),
        )

    def start(self) -> None:
        self.identity.start()
        try:
            log = (self.directory / "broker.log").open("a", buffering=1)
            self._log = log
            broker = LocalBroker(self._settings(), log)
            broker.start()
        except BaseException:
            self.identity.stop()
            raise
        self._broker = broker

    def stop(self) -> None:
        broker, self._broker = self._broker, None
        try:
            if broker is not None:
                broker.stop()
        finally:
            self.identity.stop()
            if hasattr(self, "_log"):
                self._log.close()

    def log_text(self) -> str:
        return (self.directory / "broker.log").read_text(errors="replace")

    # --- what clients set ------------------------------------------------------------------

    def sasl_env(
        self, mechanism: str, user: str = ADMIN, password: str | None = None
    ) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.sasl_port}",
            "UPLINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "UPLINK_KAFKA_SASL_MECHANISM": mechanism,
            "UPLINK_KAFKA_SASL_USERNAME": user,
            "UPLINK_KAFKA_SASL_PASSWORD": self.passwords[user] if password is None else password,
            "UPLINK_KAFKA_SSL_CAFILE": str(self.ca.cafile),
        }

    def expiring_env(self, user: str) -> dict[str, str]:
        """SCRAM-SHA-512 on the EXPIRING listener."""
        return {
            **self.sasl_env("SCRAM-SHA-512", user),
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.expiring_port}",
        }

    def mtls_env(
        self, issued: Issued | None = None, key_password: str | None = None
    ) -> dict[str, str]:
        issued = issued or self.client
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.mtls_port}",
            "UPLINK_KAFKA_SECURITY_PROTOCOL": "SSL",
            "UPLINK_KAFKA_SSL_CAFILE": str(self.ca.cafile),
            "UPLINK_KAFKA_SSL_CERTFILE": str(issued.cert),
            "UPLINK_KAFKA_SSL_KEYFILE": str(issued.key),
        }
        password = self.key_password if issued is self.client else key_password
        if password:
            env["UPLINK_KAFKA_SSL_KEY_PASSWORD"] = password
        return env

    def oauth_env(self, client: str = OAUTH_CLIENT) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{self.oauth_port}",
            "UPLINK_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "UPLINK_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
            "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL": self.identity.token_url,
            "UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID": client,
            "UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET": self.identity.clients[client].secret,
            "UPLINK_KAFKA_SSL_CAFILE": str(self.ca.cafile),
        }

    # --- users -------------------------------------------------------------------------------

    async def set_password(self, user: str, password: str | None = None) -> str:
        """Create the SCRAM-SHA-512 user or change its password, as ``kafka-configs.sh --alter
        --add-config 'SCRAM-SHA-512=[password=...]' --entity-type users`` does; returns it."""
        password = password or secrets.token_urlsafe(12)
        assert self._broker is not None, "the broker is not started"
        libs = fetch_jars(self._broker.settings.cache_dir, self._broker.settings.kafka_version)
        command = await asyncio.create_subprocess_exec(
            "java",
            "-Xmx256m",
            "-cp",
            str(libs / "*"),
            "kafka.admin.ConfigCommand",
            *("--bootstrap-server", self.plaintext, "--alter", "--entity-type", "users"),
            *("--entity-name", user, "--add-config", f"SCRAM-SHA-512=[password={password}]"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        said, _ = await command.communicate()
        if command.returncode != 0:
            raise RuntimeError(f"kafka-configs for {user} failed: {said.decode()[-2000:]}")
        self.passwords[user] = password
        return password

    # --- ACLs --------------------------------------------------------------------------------

    async def grant(self, acls: Iterable[Acl]) -> None:
        await self._acls(CreateAclsRequest, acls)

    async def revoke(self, acls: Iterable[Acl]) -> None:
        await self._acls(DeleteAclsRequest, acls)

    async def _acls(
        self, request: type[CreateAclsRequest | DeleteAclsRequest], acls: Iterable[Acl]
    ) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.plaintext)
        await admin.start()
        try:
            for acl in acls:
                answer = await admin._send_request(request(*acl.fields()))
                results: Mapping[str, object] | list[object]
                results = getattr(answer, "creation_responses", None) or getattr(
                    answer, "filter_responses", []
                )
                for result in results:
                    code = result[0]  # type: ignore[index]
                    if code:
                        raise for_code(code)(f"{acl}: {result}")
        finally:
            await admin.close()
