"""The three-broker profile (docker-compose.cluster.yml) as users deploy it: one broker container
killed under traffic through the load balancer, and no push answered 200 is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.compose.load import Tally
from tests.compose.stack import Stack, scale
from tests.compose.test_stack import Ledger, under_traffic, verify

pytestmark = [pytest.mark.compose, pytest.mark.slow]

SCALE = {"ingress": 2}


@pytest.fixture(scope="module")
def cluster(docker_host: str, run_name: str) -> Iterator[Stack]:
    stack = Stack(project=f"{run_name}-cluster", docker_host=docker_host, cluster=True)
    try:
        stack.up(*scale(SCALE))
        yield stack
    finally:
        stack.down("-v")
        left = stack.containers()
        stack.close()
        assert not left, "containers left behind"


def test_a_broker_killed_under_traffic(cluster: Stack) -> None:
    (victim,) = cluster.running("kafka-2")

    async def kill(tally: Tally) -> None:
        await asyncio.to_thread(victim.kill, "SIGKILL")

    tally = asyncio.run(under_traffic(seed=32, fault=kill, after=3_000))
    assert not tally.failed
    verify(cluster, Ledger(), tally, "a broker SIGKILLed (of 3)")
