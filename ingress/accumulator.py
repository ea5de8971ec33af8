"""Records appended straight into aiokafka's accumulator, and refused ones withdrawn from it.

``AIOKafkaProducer.send`` costs a push three coroutines (``send``, the metadata wait,
``add_message``), a serialisation and partitioning pass, and a future plus a ``RecordMetadata``
per record, resolved one by one when the batch is acknowledged. The ingress needs none of
that: it knows the partition, sends bytes and only asks *whether* the record is durable. So
``Accumulator.append`` appends to the partition's open batch synchronously and returns a bare
future; one callback on the batch's own future settles all of a batch's futures at its ack
(bench/RESULTS.md, "Produce paths" and "Push profile").

A full batch is followed by a new one in the same partition's queue rather than waited on:
the ingress's in-flight bound already bounds what is buffered. The sender drains one batch
per partition at a time, in order, as it does for ``send``.

A new batch wakes the sender only when its leader has no produce request in flight.
aiokafka keeps one request in flight per broker and wakes on every new batch; woken while
the request is out, the sender finds nothing it may send and goes back to waiting, a turn of
its loop (a drain pass and an ``asyncio.wait``) for every partition that got a new batch
meanwhile. The request's end wakes it anyway, and it then takes every batch ready.

Withdrawing: a push answered 503 leaves its record in the buffer, and aiokafka has no
delivery timeout: the record would wait for the broker however long the outage lasts, and be
written once it returns. A batch whose every future is done (failed by its deadline) has
nobody waiting for it, and is dropped while the sender has never taken it. The idempotent
producer gives a batch its sequence numbers when it drains it for a first send; a batch never
drained has none, so dropping it leaves no gap the broker would refuse
(OutOfOrderSequenceNumber). A drained batch (sent, perhaps written, being retried) keeps its
place and is written when the broker answers.

This reads aiokafka's private structures (``MessageAccumulator._batches``, ``_waiter_future``,
``_pending_batches``, ``_batch_ttl``, a batch's ``_builder``, the sender's ``_in_flight``, the
producer's ``_txn_manager``);
tests/ingress/test_outage.py and the ingress's other tests check them against the installed
release on a real broker.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, ProducerClosed
from aiokafka.producer.message_accumulator import MessageBatch
from aiokafka.structs import TopicPartition

Headers = list[tuple[str, bytes]]


class Accumulator:
    """One producer's accumulator, appended to directly (module docstring)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        max_request_size: int,
        acknowledged: Callable[[], object] = lambda: None,
    ) -> None:
        self._accumulator: Any = producer._message_accumulator
        self._in_flight: set[int] = producer._sender._in_flight  # nodes with a request out
        self._cluster = producer.client.cluster
        self._loop = asyncio.get_running_loop()
        self._max_request_size = max_request_size
        # aiokafka fails a batch that outlived its TTL while its partition has no leader (a
        # broker's controlled shutdown, the only replica), and gives it its sequence numbers
        # first: the idempotent producer's sequence then has a gap the broker refuses for good.
        # Our batches never expire: a push's deadline answers it, and a refused batch never
        # drained is withdrawn (``withdraw_refused``), without a sequence number.
        idempotent = producer._txn_manager is not None
        self._ttl: float = math.inf if idempotent else self._accumulator._batch_ttl
        self._acknowledged = acknowledged  # told once a batch is written, before its futures
        self._tps: dict[tuple[str, int], TopicPartition] = {}
        # The futures of each batch this made, until the batch is settled or withdrawn.
        self._waiters: dict[Any, list[asyncio.Future[None]]] = {}

    def append(
        self, topic: str, partition: int, key: bytes | None, value: bytes, headers: Headers
    ) -> asyncio.Future[None]:
        """Add the record to its partition's open batch; the future is done at its ack."""
        accumulator = self._accumulator
        if accumulator._closed:
            raise ProducerClosed()
        if accumulator._exception is not None:
            raise copy.copy(accumulator._exception)
        tp = self._tps.get((topic, partition))
        if tp is None:
            tp = self._tps[(topic, partition)] = TopicPartition(topic, partition)
        batches = accumulator._batches.get(tp)
        batch: Any = batches[-1] if batches else None
        waiters = self._waiters.get(batch) if batch is not None else None
        if (
            waiters is None
            or batch._builder.append(timestamp=None, key=key, value=value, headers=headers) is None
        ):
            # No open batch of ours, or it is full (or built for a retry): a new one.
            size = len(value) + (len(key) if key is not None else 0)
            size += sum(len(name) + len(data) for name, data in headers)
            if size > self._max_request_size:
                raise MessageSizeTooLargeError(f"a record of {size} bytes")
            batch = MessageBatch(
                tp, accumulator.create_builder(), self._ttl, accumulator._linger_time
            )
            accumulator._batches[tp].append(batch)
            wake = accumulator._waiter_future
            if not wake.done() and self._cluster.leader_for_partition(tp) not in self._in_flight:
                wake.set_result(None)
            self._waiters[batch] = waiters = []
            batch.future.add_done_callback(lambda done, batch=batch: self._settle(batch, done))
            # An empty batch takes any record (its size is a soft limit).
            batch._builder.append(timestamp=None, key=key, value=value, headers=headers)
        waiter: asyncio.Future[None] = self._loop.create_future()
        waiters.append(waiter)
        return waiter

    def _settle(self, batch: Any, done: asyncio.Future[Any]) -> None:
        waiters = self._waiters.pop(batch, ())
        error = done.exception() if not done.cancelled() else KafkaError("batch cancelled")
        if error is None:
            self._acknowledged()
        for waiter in waiters:
            if waiter.done():  # failed by its deadline, or its push cancelled
                continue
            if error is None:
                waiter.set_result(None)
            else:
                # A copy each: the traceback is not shared between the pushes that raise it.
                waiter.set_exception(copy.copy(error))

    def withdraw_refused(self) -> int:
        """Drop the never-sent batches nobody awaits; return how many records they held."""
        batches_by_tp: dict[Any, deque[Any]] = self._accumulator._batches
        withdrawn = 0
        for tp, batches in list(batches_by_tp.items()):
            kept = [batch for batch in batches if not self._refused(batch)]
            if len(kept) == len(batches):
                continue
            for batch in batches:
                if self._refused(batch):
                    withdrawn += batch.record_count
                    del self._waiters[batch]
            if kept:
                batches.clear()
                batches.extend(kept)
            else:
                # The sender reads the first batch of every partition listed: none may be empty.
                del batches_by_tp[tp]
        return withdrawn

    def _refused(self, batch: Any) -> bool:
        waiters = self._waiters.get(batch)
        return (
            batch.retry_count == 0  # never drained: no sequence numbers yet
            and waiters is not None
            and bool(waiters)
            and all(waiter.done() for waiter in waiters)
        )

    @property
    def buffered(self) -> int:
        """Records in the producer's buffer, sent or not, not yet acknowledged."""
        accumulator = self._accumulator
        waiting: int = sum(
            b.record_count for batches in accumulator._batches.values() for b in batches
        )
        sent: int = sum(b.record_count for b in accumulator._pending_batches)
        return waiting + sent
