"""The operator verbs' tests: settings with a re-drive topic of the test's own, and the
``uplink`` command run as an operator would, against the session's broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import pytest

from tests.consumers.conftest import SettingsFactory, make_worker_settings
from uplink.cli.main import main
from uplink.settings import IngressSettings, WorkerSettings

__all__ = ["make_worker_settings"]  # the workers' fixture, for these tests too


class Ran(NamedTuple):
    code: int
    out: str
    err: str


Uplink = Callable[..., Awaitable[Ran]]
OperateSettings = Callable[..., WorkerSettings]


@pytest.fixture
def operate_settings(make_worker_settings: SettingsFactory) -> OperateSettings:
    """A worker's settings on the test's own topics (its DLQ and re-drive topic too)."""
    return make_worker_settings


def environ(settings: WorkerSettings | IngressSettings) -> dict[str, str]:
    """The environment an operator's shell would have for this deployment."""
    topics = settings.topics
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "UPLINK_TOPIC_MESSAGES": topics.messages,
        "UPLINK_TOPIC_QUARANTINE": topics.quarantine,
        "UPLINK_TOPIC_MEDIA": topics.media,
        "UPLINK_TOPIC_STATUSES": topics.statuses,
        "UPLINK_TOPIC_DLQ": topics.dlq_pattern,
        "UPLINK_TOPIC_REDRIVE": topics.redrive_pattern,
        "UPLINK_MESSAGES_PARTITIONS": str(topics.messages_partitions),
        "UPLINK_TOPIC_PARTITIONS": str(topics.partitions),
    }


@pytest.fixture
def uplink(capsys: pytest.CaptureFixture[str]) -> Uplink:
    """``uplink ARGV...`` in a thread (the command runs its own event loop), with its exit
    code, stdout and stderr; ``env`` adds to the deployment's environment."""

    async def run(settings: WorkerSettings, *argv: str, env: dict[str, str] | None = None) -> Ran:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv), {**environ(settings), **(env or {})})
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run
