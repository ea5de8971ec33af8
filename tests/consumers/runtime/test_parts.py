"""The runtime's parts on their own, without a broker: the checkpoint's commit policy and the
retries of a transient failure."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from consumers.runtime import DeadLetters, Handler, Inbound, Positions, WorkerMetrics
from consumers.runtime.assignment import Assignment
from consumers.runtime.checkpoint import Checkpoint
from consumers.runtime.exceptions import TransientError
from consumers.runtime.retries import Retries
from schemas import PushCodec
from tests.conftest import EXAMPLES
from uplink.kafka import KafkaClients, Producer
from uplink.settings import WorkerSettings

pytestmark = pytest.mark.anyio

CODEC = PushCodec()
TP = TopicPartition("t", 0)


class Flaky(Handler):
    """Fails ``failures`` times for now, then takes the record and says it is durable."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def handle(self, inbound: Inbound) -> Positions | None:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("not yet")
        return {inbound.tp: inbound.record.offset + 1}


def test_a_commit_expires_by_count_and_by_interval() -> None:
    settings = WorkerSettings(name="test", commit_every=3, commit_interval=5.0)
    now = [100.0]
    clients = KafkaClients(settings.kafka)
    checkpoint = Checkpoint(
        settings,
        Handler(),
        Assignment(settings, CODEC, clients, dedupe=True),
        WorkerMetrics("test"),
        clock=lambda: now[0],
    )
    checkpoint.advance(TP, 2, seen=2)
    assert not checkpoint.expired()
    checkpoint.advance(TP, 3, seen=1)
    assert checkpoint.expired()  # three records since the last commit

    by_time = Checkpoint(
        settings,
        Handler(),
        Assignment(settings, CODEC, clients, dedupe=True),
        WorkerMetrics("test"),
        clock=lambda: now[0],
    )
    by_time.advance(TP, 1, seen=1)
    now[0] += 4.9
    assert not by_time.expired()
    now[0] += 0.1
    assert by_time.expired()  # five seconds since the last commit


async def test_a_transient_failure_is_retried_until_the_handler_succeeds() -> None:
    settings = WorkerSettings(name="test", retry_backoff=0.001, retry_backoff_max=0.002)
    metrics = WorkerMetrics("test")
    # Never started: a transient failure is never dead-lettered.
    dead_letters = DeadLetters(settings, Producer(KafkaClients(settings.kafka)), metrics)
    value = CODEC.encode(CODEC.parse(EXAMPLES.joinpath("text.json").read_bytes(), 0))
    record = ConsumerRecord("t", 0, 7, 0, 0, b"k", value, None, 1, len(value), [])
    inbound = Inbound(record, CODEC)
    handler = Flaky(failures=3)
    retries = Retries(settings, dead_letters, metrics, stopping=asyncio.Event())

    with pytest.raises(TransientError) as failed:  # as the worker's loop calls it
        await handler.handle(inbound)
    outcome = await retries.handle(handler, inbound, failed.value)

    assert outcome == {TP: 8}  # what the handle that succeeded returned
    assert handler.calls == 4  # the first call, two failed retries, the one that succeeded
    assert metrics.retries[TP] == 3
    assert metrics.processed[TP] == 1
