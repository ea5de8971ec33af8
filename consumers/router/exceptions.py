"""Errors of the router worker."""

from __future__ import annotations

from uplink.exceptions import ConfigError, UplinkError


class RouterError(UplinkError):
    """A transaction failed: this process stops (not a ``ConsumerError``, so the runtime does
    not dead-letter the record) and the partition's next owner redoes it from the committed
    position."""

    retriable = True


class RulesError(ConfigError):
    """The rules file cannot be used; start-up stops with this message."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(where, problem)
