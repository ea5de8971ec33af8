"""Errors shared by every uplink process."""

from __future__ import annotations


class UplinkError(Exception):
    """Base of uplink's own errors."""


class ConfigError(UplinkError):
    """A setting is missing or invalid; start-up stops with this message."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class BrokerError(UplinkError):
    """The local Kafka broker could not be fetched, formatted or started."""
