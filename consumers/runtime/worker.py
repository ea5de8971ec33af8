"""The at-least-once consumer runtime every worker runs on: the loop.

- Manual commits only, and only of positions the handler says are durable (``checkpoint.py``).
- Dedupe as a function of the log: each partition's window is rebuilt from the partition itself
  (``assignment.py``), so the decision after a crash, a rebalance or a replay equals the
  decision before.
- Undecodable records and permanent failures go to the worker's DLQ with the reason and their
  source; transient failures are retried with backoff and never skipped (``retries.py``).
- Batches and rebalances take turns; every revoke and the stop flush and commit first, so a
  rebalance or a SIGTERM redoes at most what was not yet durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError, NoOffsetForPartitionError

from consumers.runtime.assignment import Assignment
from consumers.runtime.checkpoint import Checkpoint
from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.exceptions import ConsumerError
from consumers.runtime.handler import Handler, Inbound, takes_many
from consumers.runtime.metrics import WorkerMetrics
from consumers.runtime.outcomes import Outcome, Pending, Postpone
from consumers.runtime.retries import Retries
from schemas import PushCodec, SchemaError
from uplink.exceptions import AuthenticationRefused
from uplink.kafka import KafkaClients, Producer, stop_consumer
from uplink.refusals import refusal
from uplink.resources import Resource
from uplink.settings import WorkerSettings

log = logging.getLogger(__name__)


class Worker(Resource):
    """One consumer in a group. ``start()``/``stop()`` (safe twice) or ``async with``.

    What it is handed (the handler, ``clients``, ``dead_letters``) belongs to whoever made
    it, who starts it before the worker and stops it after (the launcher); what the worker makes
    for itself (its consumer, and its dead letters' producer when none was handed) it starts and
    stops.
    """

    def __init__(
        self,
        settings: WorkerSettings,
        handler: Handler,
        codec: PushCodec,
        *,
        clients: KafkaClients | None = None,
        metrics: WorkerMetrics | None = None,
        dead_letters: DeadLetters | None = None,
        subscribe: Sequence[str] | None = None,
        dedupe: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``dedupe``: off for streams that are not the provider's pushes."""
        self._settings = settings
        self._handler = handler
        self._codec = codec
        self._clients = clients if clients is not None else KafkaClients(settings.kafka)
        self._clock = clock
        self.metrics = metrics if metrics is not None else WorkerMetrics(settings.name)
        # Its own producer only when none was handed: a test, or a worker alone in its process.
        self._own_producer: Producer | None = None
        if dead_letters is None:
            self._own_producer = Producer(self._clients)
            dead_letters = DeadLetters(settings, self._own_producer, self.metrics)
        self.dead_letters = dead_letters
        self._subscribe = list(subscribe) if subscribe is not None else [settings.topics.messages]
        self._consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._assignment = Assignment(settings, codec, self._clients, dedupe=dedupe)
        self._checkpoint = Checkpoint(settings, handler, self._assignment, self.metrics, clock)
        self._retries = Retries(settings, dead_letters, self.metrics, self._stopping)
        self._failure: BaseException | None = None  # of a rebalance or a watch: stops it
        # Batches and rebalances take turns: aiokafka runs the rebalance listener in its own
        # task, and a revoke in the middle of a batch would let this member go on handling
        # records the next owner also handles. Every rebalance revokes all partitions (eager
        # protocol), so a batch fetched before one is stale as a whole: skipped, and fetched
        # again from the committed positions.
        self._turn = asyncio.Lock()
        self._take_many = handler.take_many if takes_many(handler) else None
        self._generation = 0
        self._closing = False

    @property
    def handler(self) -> Handler:
        return self._handler

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        settings = self._settings
        if self._own_producer is not None:
            await self._own_producer.start()
        consumer = self._clients.consumer(
            group_id=settings.group,
            # Never a silent jump: a committed position that retention deleted (or that is past
            # the end) raises OffsetOutOfRangeError and stops the worker for an operator to decide.
            auto_offset_reset="none",
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(settings.session_timeout * 1000 / 3),
        )
        consumer.subscribe(self._subscribe, listener=_Rebalance(self))
        # Set before start(): the group's first join already calls the rebalance listener.
        self._consumer = consumer
        try:
            await self._clients.start(consumer)
        except BaseException:
            self._consumer = None
            await consumer.stop()
            if self._own_producer is not None:
                await self._own_producer.stop()
            raise

    async def stop(self) -> None:
        """Drain the handler, flush and commit what is durable, leave the group."""
        consumer = self._consumer
        try:
            if consumer is not None and not self._closing:
                self._closing = True
                try:
                    try:
                        # Work in flight finishes (or is given up) before the final commit;
                        # none with refused credentials: aiokafka would retry it for ever, and
                        # what is not committed is redone by the next owner.
                        await self._handler.drain()
                        if not isinstance(self._failure, AuthenticationRefused):
                            await self._checkpoint.commit_all(consumer)
                    finally:
                        # Given up like a revoke (also after a failed flush: what was not
                        # committed is dropped), before the group is left: what the handler
                        # finishes in the background (the router's transactions) is done
                        # before the next owner reads the committed position.
                        await self._handler.revoked(sorted(consumer.assignment()))
                finally:
                    # Leaving the group may call the revoke listener, which needs the consumer.
                    await stop_consumer(consumer)
                    self._consumer = None
                    self._closing = False
                    self._assignment.close()
        finally:
            if self._own_producer is not None:
                await self._own_producer.stop()

    def request_stop(self) -> None:
        """From a signal handler: finish the batch in hand, then ``run`` returns."""
        self._stopping.set()

    def fail(self, error: BaseException) -> None:
        """From a watch of the process (Kafka refusing our credentials): stop as
        ``request_stop`` does, then ``run`` raises ``error``."""
        if self._failure is None:
            self._failure = error
        self._stopping.set()

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, count: int | None = None, timeout: float | None = None) -> int:
        """Consume until ``count`` records were seen, ``timeout`` seconds passed, or a stop request.

        Returns the number of records seen (handled, skipped as duplicates, or DLQ'd).
        """
        consumer = self._require_consumer()
        assignment = self._assignment
        deadline = None if timeout is None else self._clock() + timeout
        seen = 0
        while not self._stopping.is_set():
            if count is not None and seen >= count:
                break
            if deadline is not None and self._clock() >= deadline:
                break
            wanted = (
                self._settings.max_batch
                if count is None
                else min(self._settings.max_batch, count - seen)
            )
            generation, moves = self._generation, assignment.moves
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=wanted)
            except NoOffsetForPartitionError as exc:
                # The group's first read of a partition: from its beginning, on purpose.
                fresh = [tp for tp in exc.args if isinstance(tp, TopicPartition)]
                await consumer.seek_to_beginning(*(fresh or consumer.assignment()))
                continue
            except KafkaError as exc:
                # An ACL removed while running (the group's, a topic's): said with the principal.
                refused = refusal(exc, self._settings.kafka)
                if refused is not None:
                    raise refused from exc
                raise
            async with self._turn:
                if generation != self._generation:
                    # A rebalance since the fetch: these records are fetched again. They may
                    # also be records of the new assignment (fetched after it, while getmany
                    # waited): the position is already past them, so move it back, or they
                    # would be skipped for good.
                    assigned = consumer.assignment()
                    for tp, records in batches.items():
                        if tp in assigned and not assignment.moved_since(tp, moves):
                            consumer.seek(tp, records[0].offset)
                    continue
                for tp, records in batches.items():
                    if not assignment.moved_since(tp, moves):  # else read again from its move
                        seen += await self._batch(consumer, tp, records)
                if await self._checkpoint.maybe_commit(consumer):
                    await self._record_lag(consumer)
        if self._failure is not None:
            raise self._failure
        return seen

    async def _batch(
        self,
        consumer: AIOKafkaConsumer,
        tp: TopicPartition,
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> int:
        """One partition's fetched records, in offset order; returns how many were seen (all,
        but those after a postponed one). The hot path: keep it lean.

        The batch is judged first (heads read in one call, dedupe decided for all its records at
        once), then its new records are handled in order. A handler may take a run of records
        synchronously (``take_many``, e.g. the archive appending to an open file) and leaves the
        record it stops at to ``handle``.
        """
        assignment, checkpoint = self._assignment, self._checkpoint
        values = [record.value for record in records]
        heads = self._codec.heads(values)
        if heads.failed and await self._retries.learn(self._codec, values):
            heads = self._codec.heads(values)
        judged = records
        if heads.failed:  # values without a readable head: to the DLQ
            why = dict(heads.failed)
            judged = []
            for index, record in enumerate(records):
                if index in why:
                    await self.dead_letters.send(record, f"undecodable: {why[index]}")
                else:
                    judged.append(record)
        ids, stamps = heads.ids, heads.stamps
        moves = assignment.moves
        repeats = await assignment.repeats(tp, records[0].offset, ids, judged)
        duplicates = sum(repeats)
        failed = 0
        end = len(judged)
        if judged:
            take_many, handle, codec = self._take_many, self._handler.handle, self._codec
            index = 0
            try:
                while index < end:
                    if take_many is not None:
                        index = take_many(tp, judged, stamps, repeats, index)
                        if index == end:
                            break
                    if not repeats[index]:
                        later = checkpoint.waiting(tp)
                        if later is not None:
                            await later
                            if assignment.moved_since(tp, moves):
                                return index  # the rest is read again from the new position
                        head = (ids[index], stamps[index])
                        inbound = Inbound(judged[index], codec, head, tp)
                        try:
                            durable: Outcome = await handle(inbound)
                        except (ConsumerError, SchemaError) as exc:
                            failed += 1
                            durable = await self._retries.handle(self._handler, inbound, exc)
                        if isinstance(durable, Postpone):
                            assignment.postpone(consumer, tp, judged[index].offset, durable.seconds)
                            end = index
                            break
                        if isinstance(durable, Pending):
                            checkpoint.pending(consumer, tp, durable)
                        elif durable:
                            await checkpoint.commit_positions(consumer, durable)
                    index += 1
            except BaseException:
                # The worker stops: what its last flush may commit is everything before this
                # record (taken, handled, skipped), nothing of it or after it.
                checkpoint.advance(tp, judged[index].offset)
                raise
        seen = len(records)
        if end < len(judged):  # postponed: handled up to that record, the rest read again
            seen -= len(judged) - end
            checkpoint.advance(tp, judged[end].offset, seen)
            judged, repeats = judged[:end], repeats[:end]
            duplicates = sum(repeats)
        else:
            checkpoint.advance(tp, records[-1].offset + 1, seen)
        # A failed record counts as processed once a retry succeeds (``Retries.handle``).
        self.metrics.processed[tp] += len(judged) - duplicates - failed
        self.metrics.duplicates[tp] += duplicates
        return seen

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self.metrics.lag[tp] = max(highwater - await consumer.position(tp), 0)

    # --- rebalance ---------------------------------------------------------------------------

    async def _revoked(self, partitions: list[TopicPartition]) -> None:
        async with self._turn:  # after the batch in hand, never in the middle of it
            self._generation += 1
            consumer = self._require_consumer()
            try:
                await self._checkpoint.commit(consumer, partitions)
            except BaseException as exc:
                # aiokafka logs a listener's error and goes on with the rebalance: stop the
                # worker with it instead (what was not committed is redone by the next owner).
                self._failure = exc
                self._stopping.set()
                raise
            finally:
                await self._handler.revoked(partitions)
                self._assignment.revoke(partitions)
                self._checkpoint.revoke(partitions)
                for tp in partitions:
                    self.metrics.lag.pop(tp, None)

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(partitions))
        await self._handler.assigned(list(partitions))

    def _require_consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("worker not started")
        return self._consumer


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker._revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._worker._assigned(list(assigned))
