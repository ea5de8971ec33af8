"""Group commit at the edge: the pushes in flight for one partition share one batch and one ack.

aiokafka's ``send()`` costs a coroutine, a ``send`` and an ``add_message`` call, a future and a
``RecordMetadata`` per record, then resolves each future on its own (bench/RESULTS.md, "Ingress
load"). Here a push appends its record to the open batch builder of its partition (aiokafka's C
record builder) and waits on one small waiter; the batch goes to aiokafka whole, through its
public ``send_batch``, and its one delivery future answers every push in it.

When a batch is handed over: at once when its partition has nothing queued, else the moment the
batch queued before it is taken for a request (``send_batch`` waits for that). Until then the
builder stays open, so a batch holds what arrived during one round trip to the broker, as
aiokafka's own accumulator does. Sequence numbers, retries and the idempotent producer's
ordering stay aiokafka's: it numbers a batch when it sends it.

Deadlines are per batch: a batch not acknowledged ``timeout`` seconds after it was opened
answers its pushes 503, swept by one periodic timer in opening order, so a push pays no timer
(a push that joined late gets at most one round trip less than the timeout, never more).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

from ingress.exceptions import NotDurable, Overloaded

if TYPE_CHECKING:
    from aiokafka import AIOKafkaProducer

log = logging.getLogger(__name__)

Waiter = asyncio.Future[None]
Headers = list[tuple[str, bytes]]

# Batches a partition may hold at the edge (open, full and waiting for their turn): while the
# broker is slow or gone, records of pushes already answered 503 wait here; beyond this, 503 at
# once, so memory stays bounded by partitions x this x the batch size.
MAX_BATCHES_PER_PARTITION = 4


class _Batch:
    """One partition's batch: its builder, the waiter of every push in it, its deadline."""

    __slots__ = ("builder", "deadline", "waiters")

    def __init__(self, builder: Any, deadline: float) -> None:
        self.builder = builder
        self.waiters: list[Waiter] = []
        self.deadline = deadline


class PartitionBatches:
    """Open batches, one per topic and partition, each handed to aiokafka by one task.

    ``start()`` starts the deadline sweep. At shutdown: ``flush()``, the producer's own stop
    (which sends what is queued), then ``stop()``.
    """

    def __init__(self, producer: AIOKafkaProducer, *, timeout: float, tick: float = 0.05) -> None:
        self._producer = producer
        self.timeout = timeout
        self._tick = tick
        self._open: dict[tuple[str, int], _Batch] = {}
        self._held: collections.Counter[tuple[str, int]] = collections.Counter()
        self._handing: set[asyncio.Task[None]] = set()
        self._by_deadline: collections.deque[_Batch] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self.opened = 0  # batches, for the records-per-batch ratio

    def start(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._tick, self._sweep)

    def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Headers
    ) -> Waiter:
        """Add a record to its partition's open batch; the waiter is done once it is acked."""
        batch = self._open.get((topic, partition))
        if batch is None or not _append(batch, key, value, headers):
            # None open, or it is full (its builder closed itself): that one waits its turn.
            batch = self._new(topic, partition)
            if not _append(batch, key, value, headers):
                # An empty builder takes any first record: a bug, not back-pressure.
                raise NotDurable(f"a batch for {topic}[{partition}] refused its first record")
        waiter: Waiter = asyncio.get_running_loop().create_future()
        batch.waiters.append(waiter)
        return waiter

    def _new(self, topic: str, partition: int) -> _Batch:
        tp = (topic, partition)
        if self._held[tp] >= MAX_BATCHES_PER_PARTITION:
            raise Overloaded(f"{self._held[tp]} batches for {topic}[{partition}] await Kafka")
        loop = asyncio.get_running_loop()
        batch = _Batch(self._producer.create_batch(), loop.time() + self.timeout)
        self._open[tp] = batch
        self.opened += 1
        self._held[tp] += 1
        self._by_deadline.append(batch)
        task = loop.create_task(self._hand_over(topic, partition, batch))
        self._handing.add(task)
        task.add_done_callback(lambda done: self._handed(done, tp, batch))
        return batch

    async def _hand_over(self, topic: str, partition: int, batch: _Batch) -> None:
        try:
            # Waits while the batch queued before this one has not been taken for a request;
            # appends go on meanwhile.
            delivered = await self._producer.send_batch(batch.builder, topic, partition=partition)
        finally:
            # Queued in aiokafka now (or failed): closed to further records.
            if self._open.get((topic, partition)) is batch:
                del self._open[topic, partition]
        delivered.add_done_callback(lambda future: _answer(batch, future))

    def _handed(self, task: asyncio.Task[None], tp: tuple[str, int], batch: _Batch) -> None:
        self._handing.discard(task)
        self._held[tp] -= 1
        if self._held[tp] == 0:
            del self._held[tp]
        if task.cancelled():
            _fail(batch.waiters, "the producer stopped before the batch was sent")
        elif (exc := task.exception()) is not None:
            # Failing the pending work: no push waits for an answer that will not come.
            _fail(batch.waiters, f"Kafka refused the batch: {exc!r}")

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        queue = self._by_deadline
        while queue and queue[0].deadline <= now:  # opening order is deadline order
            reason = f"no acknowledgement from Kafka within {self.timeout:g}s"
            _fail(queue.popleft().waiters, reason)
        self._timer = loop.call_later(self._tick, self._sweep)

    async def flush(self) -> None:
        """Wait until every batch is queued in aiokafka: the producer's stop then sends them."""
        if self._handing:
            await asyncio.gather(*self._handing, return_exceptions=True)

    def stop(self) -> None:
        """Stop the sweep; a push still waiting is answered 503 rather than never."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._by_deadline:
            _fail(self._by_deadline.popleft().waiters, "the producer stopped")


def _append(batch: _Batch, key: bytes | None, value: bytes, headers: Headers) -> bool:
    return batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is not None


def _answer(batch: _Batch, delivered: asyncio.Future[Any]) -> None:
    waiters, batch.waiters, batch.builder = batch.waiters, [], None  # the sweep holds the rest
    if delivered.cancelled():
        return _fail(waiters, "the batch's delivery was cancelled")
    if (exc := delivered.exception()) is not None:
        return _fail(waiters, f"Kafka refused the record: {exc!r}")
    for waiter in waiters:
        if not waiter.done():  # answered 503 by its deadline already, or its push cancelled
            waiter.set_result(None)


def _fail(waiters: list[Waiter], reason: str) -> None:
    for waiter in waiters:
        if not waiter.done():
            # One exception per waiter: a shared one would collect every push's traceback.
            waiter.set_exception(NotDurable(reason))
