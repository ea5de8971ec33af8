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
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError

from consumers.deadletters import DeadLetters
from consumers.dedupe import DedupeWindow
from consumers.exceptions import ConsumerError
from consumers.metrics import WorkerMetrics
from schemas import PushCodec, SchemaError
from uplink.resources import Resource
from uplink.settings import WorkerSettings
from uplink.topics import dlq_spec, ensure_topics

log = logging.getLogger(__name__)

Positions = dict[TopicPartition, int]


class Inbound:
    """A push record with where it came from; the datum is decoded only if ``push`` is read.

    The runtime reads only a record's head (``messageId``, event ``timestamp``) to judge it; a
    handler that stores the record as it is (the archive) never pays for the full decode.
    """

    __slots__ = ("_codec", "_push", "message_id", "record", "timestamp", "tp", "value")

    def __init__(
        self,
        record: ConsumerRecord[bytes, bytes],
        codec: PushCodec,
        head: tuple[str, int | None] | None = None,
        tp: TopicPartition | None = None,
    ) -> None:
        if record.value is None:
            raise ValueError("a push record has a value")
        self.record = record
        self.value: bytes = record.value
        self.tp = tp if tp is not None else TopicPartition(record.topic, record.partition)
        self.message_id, self.timestamp = head if head is not None else codec.head(record.value)
        self._codec = codec
        self._push: dict[str, Any] | None = None

    @property
    def push(self) -> dict[str, Any]:
        """The decoded record; raises SchemaError (the runtime dead-letters the record)."""
        if self._push is None:
            self._push = self._codec.decode(self.value)
        return self._push


class Pending(NamedTuple):
    """Positions that become safe to commit once ``ready`` is done (the archive's rename, on its
    writer thread). The runtime commits them in the background, and before it calls the
    handler's ``handle`` or ``flush`` for their partitions again."""

    ready: Awaitable[object]
    positions: Positions


class Handler(Protocol):
    """A worker's side effect. ``handle`` raises RecordError (→ DLQ) or TransientError (→ retry)."""

    async def handle(self, inbound: Inbound) -> Positions | Pending | None:
        """Do the side effect; return positions that just became durable and must be committed
        before anything else happens, positions that will be (``Pending``), or None."""
        ...

    async def flush(self, handled: Positions) -> Positions:
        """Make what was handled durable; return the positions safe to commit.

        ``handled`` holds, per partition, the offset after the last record handled. A handler
        whose effect is durable when ``handle`` returns gives it back unchanged.
        """
        ...

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """Forget the state of partitions this worker no longer owns (after their flush): on a
        rebalance's revoke, and for all of them as the worker stops, before it leaves the group."""
        ...


TakeMany = Callable[
    [TopicPartition, list["ConsumerRecord[bytes, bytes]"], list[int | None], list[bool], int],
    int,
]


class Worker(Resource):
    """One consumer in a group. ``start()``/``stop()`` (safe twice) or ``async with``."""

    def __init__(
        self,
        settings: WorkerSettings,
        handler: Handler,
        codec: PushCodec,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: WorkerMetrics | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._codec = codec
        self._clock = clock
        self.metrics = metrics if metrics is not None else WorkerMetrics(settings.name)
        # Shared with a handler that dead-letters records itself; the worker starts and stops it.
        self.dead_letters = (
            dead_letters if dead_letters is not None else DeadLetters(settings, self.metrics)
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._windows: dict[TopicPartition, DedupeWindow] = {}
        self._handled: Positions = {}
        self._later: dict[TopicPartition, asyncio.Task[None]] = {}  # commits of Pending positions
        # Partitions whose Pending failed (a rename): never flushed or committed again here, so
        # the records of the lost file are redone from the committed position by the next owner.
        self._broken: set[TopicPartition] = set()
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
        # Optional: ``take_many(tp, records, stamps, repeats, start) -> index`` handles records
        # from ``start`` on, skipping repeats, with no I/O and no Inbound, and returns the index
        # of the first it leaves to ``handle`` (len(records): none). The archive's append.
        self._take_many: TakeMany | None = getattr(handler, "take_many", None)
        self._generation = 0
        self._closing = False

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        settings = self._settings
        dlq = dlq_spec(settings.topics, settings.name, settings.kafka.max_request_size)
        await ensure_topics(settings.kafka, settings.topics, extra=[dlq])
        kafka = settings.kafka.client_options()
        await self.dead_letters.start()
        self._consumer = AIOKafkaConsumer(
            **kafka,
            group_id=self._settings.group,
            enable_auto_commit=False,
            # Never a silent jump: a committed position that retention deleted (or that is past
            # the end) raises OffsetOutOfRangeError and stops the worker for an operator to decide.
            auto_offset_reset="none",
            isolation_level="read_committed",
            session_timeout_ms=int(settings.session_timeout * 1000),
            heartbeat_interval_ms=int(settings.session_timeout * 1000 / 3),
        )
        self._consumer.subscribe([self._settings.topics.messages], listener=_Rebalance(self))
        await self._consumer.start()
        if self._settings.metrics_port is not None:
            self.metrics.serve(self._settings.metrics_port)

    async def stop(self) -> None:
        """Flush and commit what is durable, leave the group, close the DLQ producer."""
        consumer = self._consumer
        try:
            if consumer is not None and not self._closing:
                self._closing = True
                try:
                    try:
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
        finally:
            await self.dead_letters.stop()
            self.metrics.close()

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
            generation = self._generation
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
                        if tp in assigned:
                            consumer.seek(tp, records[0].offset)
                    continue
                for tp, records in batches.items():
                    await self._batch(tp, records)
                    seen += len(records)
                await self._maybe_commit(consumer)
        if self._failure is not None:
            raise self._failure
        return seen

    async def _batch(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """One partition's fetched records, in offset order. The hot path: keep it lean.

        The batch is judged first (heads read in one call, dedupe decided for all its records at
        once), then its new records are handled in order. A handler may take a run of records
        synchronously (``take_many``, e.g. the archive appending to an open file) and leaves the
        record it stops at to ``handle``.
        """
        window = await self._window(tp, records[0].offset)
        heads = self._codec.heads([record.value for record in records])
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
        repeats = window.seen_many(ids, [record.timestamp for record in judged])
        duplicates = sum(repeats)
        failed = 0
        if judged:
            take_many, handle, codec = self._take_many, self._handler.handle, self._codec
            index, end = 0, len(judged)
            try:
                while index < end:
                    if take_many is not None:
                        index = take_many(tp, judged, stamps, repeats, index)
                        if index == end:
                            break
                    if not repeats[index]:
                        if tp in self._later:
                            await self._later.pop(tp)
                        head = (ids[index], stamps[index])
                        inbound = Inbound(judged[index], codec, head, tp)
                        try:
                            durable = await handle(inbound)
                        except (ConsumerError, SchemaError) as exc:
                            failed += 1
                            durable = await self._failed(inbound, exc)
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
        self._handled[tp] = records[-1].offset + 1
        self._uncommitted += len(records)
        # A failed record counts as processed once a retry succeeds (``_failed``).
        self.metrics.processed[tp] += len(judged) - duplicates - failed
        self.metrics.duplicates[tp] += duplicates

    async def _failed(
        self, inbound: Inbound, error: ConsumerError | SchemaError
    ) -> Positions | Pending | None:
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
            self._uncommitted >= self._settings.commit_every
            or self._clock() - self._last_commit >= self._settings.commit_interval
        )
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
        await self._commit_positions(consumer, await self._handler.flush(handled))
        self._uncommitted = 0
        self._last_commit = self._clock()

    async def _commit_when(self, pending: Pending) -> None:
        try:
            await pending.ready
            await self._commit_positions(self._require_consumer(), pending.positions)
        except BaseException:
            # The next file must not be renamed before this commit: none will be, here.
            self._broken.update(pending.positions)
            raise

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
                for tp in partitions:
                    self._windows.pop(tp, None)
                    self._handled.pop(tp, None)
                    self._broken.discard(tp)
                    self.metrics.lag.pop(tp, None)

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(partitions))
        # Optional: a handler that prepares per-partition resources (the router fences the
        # previous owner's transactional producers here). Records may still arrive first.
        assigned = getattr(self._handler, "assigned", None)
        if assigned is not None:
            await assigned(list(partitions))

    async def _window(self, tp: TopicPartition, offset: int) -> DedupeWindow:
        """The partition's window, rebuilt from the log before its first record is judged.

        Built at the first record rather than in the assign callback: aiokafka may hand out
        fetched records before that callback has finished, and the record's own offset is exactly
        the position the window must stand at.
        """
        window = self._windows.get(tp)
        if window is None:
            started = time.perf_counter()
            window = await rebuild_window(self._settings, self._codec, tp, offset)
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


async def rebuild_window(
    settings: WorkerSettings, codec: PushCodec, tp: TopicPartition, position: int
) -> DedupeWindow:
    """The window as it stood before ``position``: replay one window of record time before it."""
    window = DedupeWindow(settings.dedupe_window_ms)
    if position <= 0:
        return window
    reader = AIOKafkaConsumer(
        **settings.kafka.client_options(),
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await reader.start()
    try:
        reader.assign([tp])
        last = await _record_at(reader, tp, position - 1)
        if last is None:
            return window
        found = await reader.offsets_for_times(
            {tp: max(last.timestamp - settings.dedupe_window_ms, 0)}
        )
        start = found[tp].offset if found.get(tp) is not None else position - 1
        reader.seek(tp, start)
        while (await reader.position(tp)) < position:
            batch = await reader.getmany(tp, timeout_ms=1000, max_records=5000)
            records = [record for record in batch.get(tp, []) if record.offset < position]
            heads = codec.heads([record.value for record in records])
            if heads.failed:  # it went to the DLQ when it was judged, and was never remembered
                failed = {index for index, _ in heads.failed}
                records = [r for index, r in enumerate(records) if index not in failed]
            # Remembered as they were judged; the answers are not needed.
            window.seen_many(heads.ids, [record.timestamp for record in records])
    finally:
        await reader.stop()
    return window


async def _record_at(
    reader: AIOKafkaConsumer, tp: TopicPartition, offset: int
) -> ConsumerRecord[bytes, bytes] | None:
    beginning = (await reader.beginning_offsets([tp]))[tp]
    if offset < beginning:
        return None  # retention removed it: nothing left to remember
    reader.seek(tp, offset)
    async with asyncio.timeout(60):
        while (await reader.position(tp)) <= offset:
            batch = await reader.getmany(tp, timeout_ms=1000, max_records=1)
            for record in batch.get(tp, []):
                return record
    return None  # a transaction marker: no record to date the window by
