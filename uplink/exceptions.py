"""The root of uplink's errors, shared by every process.

Every error uplink raises on purpose derives from ``UplinkError`` and says, as aiokafka's errors
do, whether trying again may succeed (``retriable``). The CLI turns each into one line on
stderr and an exit code (docs/commands.md): 78 (EX_CONFIG) for a configuration error, Kafka's
refusal of our credentials or of an operation included, 75 (EX_TEMPFAIL) for a retriable one, 1
for any other.
"""

from __future__ import annotations


class UplinkError(Exception):
    """Base of uplink's own errors."""

    retriable = False


class ConfigError(UplinkError):
    """A setting is missing or invalid; start-up stops with this message."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class BrokerError(UplinkError):
    """The local Kafka broker could not be fetched, formatted or started."""


class KafkaUnavailable(UplinkError):
    """Kafka could not be reached, or refused what a command cannot do without."""

    retriable = True


class KafkaRefused(UplinkError):
    """Kafka refused our credentials or an operation: a configuration error, which a restart
    will not cure. ``check`` names the setting or the ACL to look at."""

    reason = "Kafka refused us"  # what /readyz says

    def __init__(self, refused: str, check: str) -> None:
        super().__init__(f"{refused}; check {check}")
        self.refused = refused
        self.check = check


class AuthenticationRefused(KafkaRefused):
    """The SASL exchange, the TLS handshake or the token issuer refused our credentials."""

    reason = "Kafka refused our credentials"


class AuthorizationRefused(KafkaRefused):
    """An operation was refused by the cluster's ACLs (a topic, group, transactional id or
    cluster operation)."""

    reason = "Kafka refused the authorization"
