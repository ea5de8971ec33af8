"""Re-deliveries of the router's HTTP outputs: a ``Handler`` on the consumer runtime.

The router parks a delivery that failed (or was still in flight at a commit) in the first delay
topic, inside its transaction. A second ``Worker`` of the router's process (group
``<group>.retry``, no dedupe: one push parked for two endpoints is two records) reads the delay
topics. A record not yet due is ``Postpone``d: the runtime pauses its partition until then and
reads it again (records of one delay topic come due in order), never sleeping on the others. A
due record is re-delivered by a task of its own (the endpoint's slots bound them), so a slow
endpoint holds up neither other endpoints nor the reading; its partition is committed up to its
first record not finished yet (``InOrderCommits``). What fails again moves on to the next delay
topic, or to the router's DLQ after the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiokafka import ConsumerRecord

from consumers.router.delivery import (
    H_ATTEMPTS,
    H_DUE,
    H_ENDPOINT,
    H_REASON,
    H_RULE,
    H_SETTLED,
    IN_FLIGHT,
    Deliverer,
    Verdict,
    header,
    park,
    parked,
)
from consumers.router.metrics import RouterMetrics
from consumers.router.settings import RouterSettings
from consumers.router.settlements import Settlements
from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.handler import Inbound
from consumers.runtime.outcomes import Postpone
from consumers.runtime.tracker import Concurrent, InOrderCommits
from schemas import SchemaError
from uplink.kafka import Producer

# Re-deliveries under way at once; beyond it, reading waits.
MAX_IN_FLIGHT = 1000


def retry_group(group: str) -> str:
    """The consumer group that reads the delay topics of router group ``group``."""
    return f"{group}.retry"


class Redeliveries(Concurrent):
    """Re-delivers each parked delivery when it is due. A revoked partition's re-deliveries are
    cancelled, and at stop those in flight too: uncommitted, so the next owner re-delivers them
    (at least once; the Idempotency-Key tells the endpoint)."""

    def __init__(
        self,
        settings: RouterSettings,
        deliverer: Deliverer,
        producer: Producer,
        dead_letters: DeadLetters,
        metrics: RouterMetrics,
        clock: Callable[[], float] = time.time,
        settlements: Settlements | None = None,
    ) -> None:
        self._settings = settings
        # Answers to first attempts that came after their delivery was parked, from whichever
        # router process posted them.
        self._settlements = settlements
        self._deliverer = deliverer
        self._producer = producer  # to the next delay topic
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._clock = clock
        self._steps = {topic: n for n, topic in enumerate(settings.delay_topics, 1)}
        super().__init__(InOrderCommits(MAX_IN_FLIGHT, "re-delivery"), drain_timeout=0)

    async def handle(self, inbound: Inbound) -> Postpone | None:
        record = inbound.record
        if header(record, H_SETTLED) is not None:
            if self._settlements is not None:
                self._settlements.note(record)
            return None  # a settlement (settlements.py): nothing to send
        due_ms = int(header(record, H_DUE) or 0)
        now_ms = int(self._clock() * 1000)
        if due_ms > now_ms:
            return Postpone((due_ms - now_ms) / 1000)
        where = f"re-delivery {record.topic}[{record.partition}]@{record.offset}"
        await self._tracker.start(inbound.tp, record.offset, self._retry(inbound), where)
        return None

    async def _retry(self, inbound: Inbound) -> None:
        record = inbound.record
        endpoint = header(record, H_ENDPOINT) or ""
        rule = header(record, H_RULE) or ""
        attempts = int(header(record, H_ATTEMPTS) or 0)
        if self._deliverer.endpoint(endpoint) is None:
            await self._dead_letter(record, endpoint, f"endpoint {endpoint!r} is not configured")
            return
        try:
            raw = inbound.push["raw"]
        except SchemaError as exc:
            await self._dead_letter(record, endpoint, f"undecodable: {exc}")
            return
        message_id = inbound.message_id
        await self._deliverer.posted(endpoint, message_id)  # its first attempt, if still going
        if self._deliverer.answer(endpoint, message_id) is not None:
            return  # settled since it was parked: delivered, or refused and dead-lettered then
        if (
            self._settlements is not None
            and header(record, H_REASON) == IN_FLIGHT
            and await self._settlements.find(record, endpoint) is not None
        ):
            return  # settled so by the router process that posted it
        attempt = await self._deliverer.post(endpoint, raw, message_id, rule)
        attempts += 1
        if attempt.verdict is Verdict.DELIVERED:
            return
        if attempt.verdict is Verdict.REFUSED:
            await self._dead_letter(record, endpoint, attempt.reason)
            return
        step = self._steps[record.topic] + 1
        if step > len(self._settings.delays):
            await self._dead_letter(
                record, endpoint, f"gave up after {attempts} attempts: {attempt.reason}"
            )
            return
        await park(
            self._producer,
            parked(
                self._settings, record, endpoint, rule, attempts, attempt.reason, step, self._clock
            ),
        )
        self._metrics.retries[endpoint] += 1

    async def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], endpoint: str, reason: str
    ) -> None:
        await self._dead_letters.send(record, f"http:{endpoint}: {reason}")
        self._metrics.dead_lettered[endpoint] += 1
