"""The router's own settings (beside its WorkerSettings); its rules come from the rules file."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from uplink.exceptions import ConfigError
from uplink.settings import CommitPolicy, Env, build

# Commits end the router's transactions: a short interval keeps routed records visible to
# read_committed readers soon after they arrive; ``every`` also caps a transaction's growth.
COMMITS = CommitPolicy(every=1000, interval=0.5)


@dataclass(frozen=True)
class RouterSettings:
    """The router's own settings; its rules come from the rules file."""

    # Seconds before each re-delivery of a failed HTTP output; after the last, the DLQ.
    delays: tuple[float, ...] = (60.0, 300.0, 1800.0)
    # One delay topic per step (1, 2, ...), read by the retry loop.
    delay_pattern: str = "uplink.router.delay.{step}.v1"
    # Transactional ids are <prefix>.<topic>.<partition>: the owner of an input partition fences
    # whoever owned it before (default prefix: the group id).
    transactional_prefix: str | None = None
    # How long a commit waits for first HTTP attempts still in flight before parking them in the
    # first delay topic. Short: a hanging endpoint costs every commit this long. A parked attempt
    # that then succeeds is not re-delivered by the same process (and else carries the same
    # Idempotency-Key).
    flush_grace: float = 0.05

    def __post_init__(self) -> None:
        if not self.delays or any(d < 0 for d in self.delays):
            raise ConfigError("UPLINK_ROUTER_DELAYS", "needs one or more delays >= 0 (seconds)")
        if "{step}" not in self.delay_pattern:
            raise ConfigError("UPLINK_TOPIC_ROUTER_DELAY", "must contain {step}")
        if self.flush_grace < 0:
            raise ConfigError("UPLINK_ROUTER_FLUSH_GRACE", "must be >= 0")

    def delay_topic(self, step: int) -> str:
        """Step 1 is the first re-delivery."""
        return self.delay_pattern.format(step=step)

    @property
    def delay_topics(self) -> list[str]:
        return [self.delay_topic(step) for step in range(1, len(self.delays) + 1)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **explicit: Any) -> RouterSettings:
        env = Env(environ)
        values: dict[str, Any] = {
            "delays": env.get("UPLINK_ROUTER_DELAYS", _seconds_list),
            "delay_pattern": env.get("UPLINK_TOPIC_ROUTER_DELAY", str),
            "transactional_prefix": env.get("UPLINK_ROUTER_TRANSACTIONAL_ID", str),
            "flush_grace": env.get("UPLINK_ROUTER_FLUSH_GRACE", float),
        }
        return build(cls, values, explicit)


def _seconds_list(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(",") if part.strip())
