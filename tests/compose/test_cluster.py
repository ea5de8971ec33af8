"""The three-broker profile (docker-compose.cluster.yml) as users deploy it: one broker container
killed under traffic through the load balancer, and no push answered 200 is lost."""

from __future__ import annotations

import asyncio

import pytest

from tests.compose.load import Tally
from tests.compose.scenario import Ledger, under_traffic, verify
from tests.compose.stack import Stack

pytestmark = [pytest.mark.compose, pytest.mark.slow]


def test_a_broker_killed_under_traffic(cluster: Stack) -> None:
    (victim,) = cluster.running("kafka-2")

    async def kill(tally: Tally) -> None:
        await asyncio.to_thread(victim.kill, "SIGKILL")

    tally = asyncio.run(under_traffic(seed=32, fault=kill, after=3_000))
    assert not tally.failed
    verify(cluster, Ledger(), tally, "a broker SIGKILLed (of 3)")
