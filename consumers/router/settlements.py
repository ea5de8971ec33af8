"""Late answers, kept in the cluster: a parked delivery settled by its first attempt's answer in
whichever router process comes to re-send it.

A commit parks a delivery whose first POST is still in flight (delivery.py). When that POST's
final answer arrives (delivered, or refused: dead-lettered at once), the router that posted it
writes a *settlement* into the first delay topic, once the parked copy's transaction has
committed: the parked record's key and value, ``uplink-settled`` (the answer), the endpoint and
``uplink-source`` (the input record). It lands in the parked copy's partition (same key, same
partitioner), after it. When the copy comes due, ``Settlements`` reads that partition from the
copy's offset up to its end for a settlement of the same endpoint and source: found, the copy is
not sent again. A settlement the retry loop reads in turn is skipped.

What is left: an answer still not in when the copy comes due (an endpoint timeout longer than
the first delay), or a posting process stopped before it could write the settlement. Those
copies are sent again, with the same ``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumers.router.delivery import (
    H_ENDPOINT,
    H_REASON,
    H_SETTLED,
    H_SOURCE,
    Delivery,
    header,
)
from uplink.kafka import KafkaClients, Producer
from uplink.resources import Resource

log = logging.getLogger(__name__)

# A read of a partition's tail that brings nothing for this long stops there (the rest is not
# readable yet: a transaction still open); the copy is then sent again, as without a settlement.
IDLE_SECONDS = 5.0


async def write_settlement(producer: Producer, topic: str, delivery: Delivery) -> None:
    """Settle ``delivery``'s parked copy in ``topic`` (the first delay topic) by its answer."""
    attempt = delivery.attempt
    if attempt is None:
        raise ValueError("a delivery without an answer is not settled")
    record = delivery.record
    await producer.send(
        topic,
        record.value,
        key=record.key,
        headers=[
            (H_SETTLED, attempt.verdict.value.encode()),
            (H_ENDPOINT, delivery.endpoint.encode()),
            (H_SOURCE, delivery.source.encode()),
            (H_REASON, attempt.reason.encode()[:1000]),
        ],
    )


class Settlements(Resource):
    """The settlements of the first delay topic, read ahead of the parked copies they settle.
    ``start()``/``stop()`` or ``async with``."""

    def __init__(self, clients: KafkaClients, remember: int = 100_000) -> None:
        self._clients = clients
        self._consumer = clients.consumer(
            group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self._started = False
        self._lock = asyncio.Lock()  # one read at a time: the consumer is assigned per read
        self._read_to: dict[TopicPartition, int] = {}
        # (endpoint, source) → the answer, oldest first; bounded.
        self._known: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._remember = remember

    async def start(self) -> None:
        if not self._started:
            await self._consumer.start()
            self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._consumer.stop()

    def note(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Remember ``record`` if it is a settlement; whether it was one."""
        settled = header(record, H_SETTLED)
        if settled is None:
            return False
        key = (header(record, H_ENDPOINT) or "", header(record, H_SOURCE) or "")
        self._known[key] = settled
        self._known.move_to_end(key)
        if len(self._known) > self._remember:
            self._known.popitem(last=False)
        return True

    async def find(self, copy: ConsumerRecord[bytes, bytes], endpoint: str) -> str | None:
        """The answer that settled the parked ``copy`` (delivered, refused), if one is in its
        partition after it."""
        key = (endpoint, header(copy, H_SOURCE) or "")
        found = self._known.get(key)
        if found is not None:
            return found
        tp = TopicPartition(copy.topic, copy.partition)
        async with self._lock:
            try:
                await self._read(tp, copy.offset + 1)
            except KafkaError as exc:
                # Not known to be settled: sent again, as without settlements (same key).
                log.warning("settlements of %s not read (%r): sending again", tp, exc)
        return self._known.get(key)

    async def _read(self, tp: TopicPartition, start: int) -> None:
        consumer = self._consumer
        begin = max(start, self._read_to.get(tp, 0))
        # Assigned only with something to read (uplink/operate/window.py says why), and paused
        # once read, so the consumer fetches nothing in between.
        end = (await consumer.end_offsets([tp]))[tp]
        if begin >= end:
            return
        consumer.assign([tp])
        consumer.seek(tp, begin)
        idle_since = time.monotonic()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            records = batch.get(tp, [])
            if records:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > IDLE_SECONDS:
                consumer.pause(tp)
                return  # read again from ``begin`` next time
            for record in records:
                if record.offset < end:
                    self.note(record)
        consumer.pause(tp)
        self._read_to[tp] = end
