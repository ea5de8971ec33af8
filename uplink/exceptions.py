"""The root of uplink's errors, shared by every process.

Every error uplink raises on purpose derives from ``UplinkError`` and says, as aiokafka's errors
do, whether trying again may succeed (``retriable``). The CLI turns each into one line on
stderr and an exit code (docs/commands.md): 2 for a configuration error, 75 (EX_TEMPFAIL) for a
retriable one, 1 for any other.
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
