"""The router's own settings (beside its WorkerSettings); its rules come from the rules file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uplink.settings import CommitPolicy
from uplink.variables import (
    PATH,
    SECONDS,
    SECONDS_LIST,
    TEXT,
    at_least_zero,
    read,
    validate,
    variable,
)

# Commits end the router's transactions: a short interval keeps routed records visible to
# read_committed readers soon after they arrive; ``every`` also caps a transaction's growth.
COMMITS = CommitPolicy(every=1000, interval=0.5)

ROUTER = ("router",)


def _delays(value: tuple[float, ...]) -> str | None:
    if not value or any(delay < 0 for delay in value):
        return "needs one or more delays >= 0 (seconds)"
    return None


def _step_pattern(value: str) -> str | None:
    return None if "{step}" in value else "must contain {step}"


@dataclass(frozen=True)
class RouterSettings:
    """The router's own settings; its rules come from the rules file."""

    # One setting for the router and the operator's `uplink trace`, which looks for a push in
    # the output topics of the same file.
    rules: str | None = variable(
        "UPLINK_ROUTER_RULES",
        PATH,
        ROUTER,
        "the rules file (TOML); `uplink trace` looks in its output topics",
        default=None,
        flag="--rules",
    )
    delays: tuple[float, ...] = variable(
        "UPLINK_ROUTER_DELAYS",
        SECONDS_LIST,
        ROUTER,
        "the waits before each re-delivery of a failed HTTP output (then the DLQ); "
        "one delay topic per step",
        default=(60.0, 300.0, 1800.0),
        check=_delays,
    )
    delay_pattern: str = variable(
        "UPLINK_TOPIC_ROUTER_DELAY",
        TEXT,
        ROUTER,
        "the delay topics' pattern (`{step}` = 1, 2, ...), read by the retry loop",
        default="uplink.router.delay.{step}.v1",
        check=_step_pattern,
    )
    # The owner of an input partition fences whoever owned it before.
    transactional_prefix: str | None = variable(
        "UPLINK_ROUTER_TRANSACTIONAL_ID",
        TEXT,
        ROUTER,
        "prefix of the per-partition transactional ids (`<prefix>.<topic>.<partition>`)",
        default=None,
        shown="the group id",
    )
    # Short: a hanging endpoint costs every commit this long. A parked attempt that then
    # succeeds is not re-delivered by the same process (and else carries the same
    # Idempotency-Key).
    flush_grace: float = variable(
        "UPLINK_ROUTER_FLUSH_GRACE",
        SECONDS,
        ROUTER,
        "how long a commit waits for first HTTP attempts in flight before parking them in "
        "the first delay topic",
        default=0.05,
        check=at_least_zero,
    )

    def __post_init__(self) -> None:
        validate(self)

    def delay_topic(self, step: int) -> str:
        """Step 1 is the first re-delivery."""
        return self.delay_pattern.format(step=step)

    @property
    def delay_topics(self) -> list[str]:
        return [self.delay_topic(step) for step in range(1, len(self.delays) + 1)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> RouterSettings:
        return read(cls, environ, explicit=explicit)
