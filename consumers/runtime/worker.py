"""The at-least-once consumer runtime every worker runs on.

- Manual commits only, and only of positions the handler says are durable (``Handler.flush``).
- A commit policy by count and by interval on a monotonic clock; flush and commit on revoke and
  on stop, so a rebalance or a SIGTERM redoes at most what was not yet durable.
- Dedupe as a function of the log: after assignment the window of each partition is rebuilt from
  the partition itself (one window of record time before the position, up to it), so the decision
  after a crash, a rebalance or a replay equals the decision before.
- Undecodable records and permanent failures go to the worker's DLQ with the reason and their
  source; transient failures are retried with backoff and never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError

from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.dedupe import DedupeWindow
from consumers.runtime.exceptions import ConsumerError, Rewind
from consumers.runtime.handler import (
    Handler,
    Inbound,
    Outcome,
    Pending,
    Positions,
    Postpone,
    takes_many,
)
from consumers.runtime.metrics import WorkerMetrics
from consumers.runtime.window import rebuild_window
from schemas import PushCodec, SchemaError
from uplink.exceptions import UplinkError
from uplink.kafka import KafkaClients, Producer
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
        # Off for streams that are not the provider's pushes (the router's delay topics), where
        # one push may stand for several records on purpose.
        self._dedupe = dedupe
        self._consumer: AIOKafkaConsumer | None = None
        self._windows: dict[TopicPartition, DedupeWindow] = {}
        self._handled: Positions = {}
        self._later: dict[TopicPartition, asyncio.Task[None]] = {}  # commits of Pending positions
        # Partitions whose Pending failed (a rename): never flushed or committed again here, so
        # the records of the lost file are redone from the committed position by the next owner.
        self._broken: set[TopicPartition] = set()
        self._resumes: dict[TopicPartition, asyncio.TimerHandle] = {}  # of postponed partitions
        self._failure: BaseException | None = None  # of a rebalance: stops the worker
        self._uncommitted = 0
        self._last_commit = clock()
        self._stopping = asyncio.Event()
        # Batches and rebalances take turns: aiokafka runs the rebalance listener in its own
        # task, and a revoke in the middle of a batch would let this member go on handling
        # records the next owner also handles. Every rebalance revokes all partitions (eager
        # protocol), so a batch fetched before one is stale as a whole: skipped, and fetched
        # again from the committed positions.
        self._turn = asyncio.Lock()
        self._take_many = handler.take_many if takes_many(handler) else None
        self._generation = 0
        self._closing = False
        # Partitions moved by a Rewind: the count of moves at the last move of each, so records
        # fetched before it (from the old position) are told apart and skipped.
        self._moves = 0
        self._moved: dict[TopicPartition, int] = {}

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
            await consumer.start()
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
                        # Work in flight finishes (or is given up) before the final commit.
                        await self._handler.drain()
                        await self._commit(consumer, [*self._handled, *self._later])
                    finally:
                        # Given up like a revoke (also after a failed flush: what was not
                        # committed is dropped), before the group is left: what the handler
                        # finishes in the background (the router's transactions) is done
                        # before the next owner reads the committed position.
                        await self._handler.revoked(sorted(consumer.assignment()))
                finally:
                    # Leaving the group may call the revoke listener, which needs the consumer.
                    await consumer.stop()
                    self._consumer = None
                    self._closing = False
                    self._cancel_resumes(list(self._resumes))
        finally:
            if self._own_producer is not None:
                await self._own_producer.stop()

    def request_stop(self) -> None:
        """From a signal handler: finish the batch in hand, then ``run`` returns."""
        self._stopping.set()

    # --- the loop ----------------------------------------------------------------------------

    async def run(self, count: int | None = None, timeout: float | None = None) -> int:
        """Consume until ``count`` records were seen, ``timeout`` seconds passed, or a stop request.

        Returns the number of records seen (handled, skipped as duplicates, or DLQ'd).
        """
        consumer = self._require_consumer()
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
            generation, moves = self._generation, self._moves
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=wanted)
            except NoOffsetForPartitionError as exc:
                # The group's first read of a partition: from its beginning, on purpose.
                fresh = [tp for tp in exc.args if isinstance(tp, TopicPartition)]
                await consumer.seek_to_beginning(*(fresh or consumer.assignment()))
                continue
            async with self._turn:
                if generation != self._generation:
                    # A rebalance since the fetch: these records are fetched again. They may
                    # also be records of the new assignment (fetched after it, while getmany
                    # waited): the position is already past them, so move it back, or they
                    # would be skipped for good.
                    assigned = consumer.assignment()
                    for tp, records in batches.items():
                        if tp in assigned and not self._moved_since(tp, moves):
                            consumer.seek(tp, records[0].offset)
                    continue
                for tp, records in batches.items():
                    if not self._moved_since(tp, moves):  # else read again from where it moved
                        seen += await self._batch(tp, records)
                await self._maybe_commit(consumer)
        if self._failure is not None:
            raise self._failure
        return seen

    async def _batch(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> int:
        """One partition's fetched records, in offset order; returns how many were seen (all,
        but those after a postponed one). The hot path: keep it lean.

        The batch is judged first (heads read in one call, dedupe decided for all its records at
        once), then its new records are handled in order. A handler may take a run of records
        synchronously (``take_many``, e.g. the archive appending to an open file) and leaves the
        record it stops at to ``handle``.
        """
        values = [record.value for record in records]
        heads = self._codec.heads(values)
        if heads.failed and await self._learnt(values):
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
        moves = self._moves
        if self._dedupe:
            window = await self._window(tp, records[0].offset)
            repeats = window.seen_many(ids, [record.timestamp for record in judged])
        else:
            repeats = [False] * len(judged)
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
                        if tp in self._later:
                            await self._later.pop(tp)
                            if self._moved_since(tp, moves):
                                return index  # the rest is read again from the new position
                        head = (ids[index], stamps[index])
                        inbound = Inbound(judged[index], codec, head, tp)
                        try:
                            durable: Outcome = await handle(inbound)
                        except (ConsumerError, SchemaError) as exc:
                            failed += 1
                            durable = await self._failed(inbound, exc)
                        if isinstance(durable, Postpone):
                            self._postpone(tp, judged[index].offset, durable.seconds)
                            end = index
                            break
                        if isinstance(durable, Pending):
                            self._later[tp] = asyncio.create_task(self._commit_when(durable))
                        elif durable:
                            await self._commit_positions(self._require_consumer(), durable)
                    index += 1
            except BaseException:
                # The worker stops: what its last flush may commit is everything before this
                # record (taken, handled, skipped), nothing of it or after it.
                self._handled[tp] = judged[index].offset
                raise
        seen = len(records)
        if end < len(judged):  # postponed: handled up to that record, the rest read again
            self._handled[tp] = judged[end].offset
            seen -= len(judged) - end
            judged, repeats = judged[:end], repeats[:end]
            duplicates = sum(repeats)
        else:
            self._handled[tp] = records[-1].offset + 1
        self._uncommitted += seen
        # A failed record counts as processed once a retry succeeds (``_failed``).
        self.metrics.processed[tp] += len(judged) - duplicates - failed
        self.metrics.duplicates[tp] += duplicates
        return seen

    def _moved_since(self, tp: TopicPartition, moves: int) -> bool:
        return self._moved.get(tp, -1) > moves

    async def _learnt(self, values: list[bytes | None]) -> bool:
        """Whether writer schemas of ids met in ``values`` were learnt from the registry (then
        the batch is read again). While the registry does not answer, retried with backoff:
        a record is never dead-lettered for an outage, and nothing after it is handled."""
        delay = self._settings.retry_backoff
        while True:
            try:
                return await self._codec.learn(values)
            except UplinkError as exc:
                if not exc.retriable or self._stopping.is_set():
                    raise
                log.warning("writer schema not known, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._settings.retry_backoff_max)

    def _postpone(self, tp: TopicPartition, offset: int, seconds: float) -> None:
        """Read ``tp`` again from ``offset`` in ``seconds``; meanwhile its partition is paused."""
        consumer = self._require_consumer()
        consumer.seek(tp, offset)
        consumer.pause(tp)
        # The window judged records past this one: rebuilt from the log when they come again.
        self._windows.pop(tp, None)
        self._cancel_resumes([tp])

        def resume() -> None:
            self._resumes.pop(tp, None)
            if self._consumer is not None and tp in self._consumer.assignment():
                self._consumer.resume(tp)

        self._resumes[tp] = asyncio.get_running_loop().call_later(max(seconds, 0.0), resume)

    def _cancel_resumes(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            timer = self._resumes.pop(tp, None)
            if timer is not None:
                timer.cancel()

    async def _failed(self, inbound: Inbound, error: ConsumerError | SchemaError) -> Outcome:
        """After a failed ``handle``: retry a transient failure with backoff until it succeeds
        (returns what that ``handle`` returned), or dead-letter the record (returns None)."""
        delay = self._settings.retry_backoff
        while True:
            if isinstance(error, SchemaError):  # the handler decoded the datum: it is corrupt
                await self.dead_letters.send(inbound.record, f"undecodable: {error}")
                return None
            if not error.retriable:
                await self.dead_letters.send(inbound.record, str(error) or type(error).__name__)
                return None
            self.metrics.retries[inbound.tp] += 1
            log.warning(
                "transient failure at %s, retrying in %.1fs: %s",
                inbound.tp,
                delay,
                error,
                extra={
                    "topic": inbound.tp.topic,
                    "partition": inbound.tp.partition,
                    "offset": inbound.record.offset,
                },
            )
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: half to all of it
            delay = min(delay * 2, self._settings.retry_backoff_max)
            try:
                durable = await self._handler.handle(inbound)
            except (ConsumerError, SchemaError) as exc:
                error = exc
            else:
                self.metrics.processed[inbound.tp] += 1
                return durable

    # --- commits -----------------------------------------------------------------------------

    async def _maybe_commit(self, consumer: AIOKafkaConsumer) -> None:
        for tp in [tp for tp, later in self._later.items() if later.done()]:
            await self._later.pop(tp)  # raises what failed: the worker stops
        due = (
            (every := self._settings.commit_every) is not None and self._uncommitted >= every
        ) or self._clock() - self._last_commit >= self._settings.commit_interval
        if due and self._handled:
            await self._commit(consumer, list(self._handled))
        if due:
            await self._record_lag(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        later = [self._later.pop(tp) for tp in partitions if tp in self._later]
        if later:  # before the flush renames the partitions' next files
            await asyncio.gather(*later)
        handled = {
            tp: self._handled[tp]
            for tp in partitions
            if tp in self._handled and tp not in self._broken
        }
        if not handled:
            return
        try:
            durable = await self._handler.flush(handled)
        except Rewind as rewind:
            await self._rewind(consumer, rewind)
        else:
            await self._commit_positions(consumer, durable)
        self._uncommitted = 0
        self._last_commit = self._clock()

    async def _commit_when(self, pending: Pending) -> None:
        try:
            try:
                await pending.ready
            except Rewind as rewind:
                await self._rewind(self._require_consumer(), rewind)
                return
            await self._commit_positions(self._require_consumer(), pending.positions)
        except BaseException:
            # The next file must not be renamed before this commit: none will be, here.
            self._broken.update(pending.positions)
            raise

    async def _rewind(self, consumer: AIOKafkaConsumer, rewind: Rewind) -> None:
        """Another writer did the work up to ``rewind.moved``: commit those positions (and the
        flush's others), and read those partitions again from there, with their dedupe windows
        rebuilt at the new position."""
        await self._commit_positions(consumer, {**rewind.durable, **rewind.moved})
        assigned = consumer.assignment()
        for tp, offset in rewind.moved.items():
            log.info("%s: read again from %d, where another writer's file ends", tp, offset)
            self._moves += 1
            self._moved[tp] = self._moves
            self._handled[tp] = offset
            self._windows.pop(tp, None)
            if tp in assigned:
                consumer.seek(tp, offset)

    async def _commit_positions(self, consumer: AIOKafkaConsumer, durable: Positions) -> None:
        if not durable:
            return  # e.g. a handler that committed inside its own transaction
        started = time.perf_counter()
        await consumer.commit(dict(durable))
        self.metrics.commit_seconds.observe(time.perf_counter() - started)

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
                await self._commit(consumer, partitions)
            except BaseException as exc:
                # aiokafka logs a listener's error and goes on with the rebalance: stop the
                # worker with it instead (what was not committed is redone by the next owner).
                self._failure = exc
                self._stopping.set()
                raise
            finally:
                await self._handler.revoked(partitions)
                self._cancel_resumes(partitions)
                for tp in partitions:
                    self._windows.pop(tp, None)
                    self._handled.pop(tp, None)
                    self._broken.discard(tp)
                    self.metrics.lag.pop(tp, None)

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(partitions))
        await self._handler.assigned(list(partitions))

    async def _window(self, tp: TopicPartition, offset: int) -> DedupeWindow:
        """The partition's window, rebuilt from the log before its first record is judged.

        Built at the first record rather than in the assign callback: aiokafka may hand out
        fetched records before that callback has finished, and the record's own offset is exactly
        the position the window must stand at.
        """
        window = self._windows.get(tp)
        if window is None:
            started = time.perf_counter()
            window = await rebuild_window(self._settings, self._codec, tp, offset, self._clients)
            self._windows[tp] = window
            seconds = time.perf_counter() - started
            log.info(
                "%s at %d: dedupe window of %d ids rebuilt from the log in %.2fs",
                tp,
                offset,
                len(window),
                seconds,
                extra={"topic": tp.topic, "partition": tp.partition, "ids": len(window)},
            )
        return window

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
