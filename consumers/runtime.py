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
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import NoOffsetForPartitionError

from consumers.deadletters import DeadLetters
from consumers.dedupe import DedupeWindow
from consumers.exceptions import ConsumerError
from consumers.metrics import WorkerMetrics
from schemas import PushCodec, SchemaError
from uplink.settings import WorkerSettings
from uplink.topics import TopicSpec, ensure_topics, topic_configs

log = logging.getLogger(__name__)

Positions = dict[TopicPartition, int]


@dataclass(frozen=True)
class Inbound:
    """A decoded push with where it came from."""

    record: ConsumerRecord[bytes, bytes]
    push: dict[str, Any]

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


class Handler(Protocol):
    """A worker's side effect. ``handle`` raises RecordError (→ DLQ) or TransientError (→ retry)."""

    async def handle(self, inbound: Inbound) -> Positions | None:
        """Do the side effect; return positions that just became durable and must be committed
        before anything else happens (the archive's rename), or None."""
        ...

    async def flush(self, handled: Positions) -> Positions:
        """Make what was handled durable; return the positions safe to commit.

        ``handled`` holds, per partition, the offset after the last record handled. A handler
        whose effect is durable when ``handle`` returns gives it back unchanged.
        """
        ...

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """Forget the state of partitions this worker no longer owns (after their flush)."""
        ...


class Worker:
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
        self._uncommitted = 0
        self._last_commit = clock()
        self._stopping = asyncio.Event()
        self._closing = False
        # aiokafka runs the revoke callback concurrently with this loop: the loop holds the lock
        # while it handles a fetched batch and commits, so a revoke waits for the batch, and the
        # records of a partition revoked after they were fetched are left to its next owner.
        self._working = asyncio.Lock()
        self._revoked_partitions: set[TopicPartition] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._consumer is not None:
            return
        settings = self._settings
        dlq = TopicSpec(
            settings.dlq,
            settings.topics.partitions,
            topic_configs(settings.topics, settings.kafka.max_request_size),
        )
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
                    await self._commit(consumer, list(self._handled))
                finally:
                    # Leaving the group may call the revoke listener, which needs the consumer.
                    await consumer.stop()
                    self._consumer = None
                    self._closing = False
        finally:
            await self.dead_letters.stop()
            self.metrics.close()

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

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
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=wanted)
            except NoOffsetForPartitionError as exc:
                # The group's first read of a partition: from its beginning, on purpose.
                fresh = [tp for tp in exc.args if isinstance(tp, TopicPartition)]
                await consumer.seek_to_beginning(*(fresh or consumer.assignment()))
                continue
            async with self._working:
                for tp, records in batches.items():
                    if tp in self._revoked_partitions:
                        # Revoked since it was fetched: its next owner reads it. Should these be
                        # records of a new assignment whose callback has not run yet, read them
                        # again rather than skip them.
                        if tp in consumer.assignment():
                            consumer.seek(tp, records[0].offset)
                        continue
                    for record in records:
                        await self._one(tp, record)
                        seen += 1
                await self._maybe_commit(consumer)
        return seen

    async def _one(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        try:
            push = self._codec.decode(record.value) if record.value is not None else None
        except SchemaError as exc:
            await self.dead_letters.send(record, f"undecodable: {exc}")
        else:
            if push is None:
                await self.dead_letters.send(record, "no value")
            elif (await self._window(tp, record.offset)).seen(push["messageId"], record.timestamp):
                self.metrics.duplicates[tp] += 1
            else:
                await self._handle(Inbound(record, push))
        self._handled[tp] = record.offset + 1
        self._uncommitted += 1

    async def _handle(self, inbound: Inbound) -> None:
        delay = self._settings.retry_backoff
        while True:
            try:
                durable = await self._handler.handle(inbound)
            except ConsumerError as exc:
                if not exc.retriable:
                    await self.dead_letters.send(inbound.record, str(exc) or type(exc).__name__)
                    return
                self.metrics.retries[inbound.tp] += 1
                log.warning(
                    "transient failure at %s, retrying in %.1fs: %s", inbound.tp, delay, exc
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # full jitter, bounded
                delay = min(delay * 2, self._settings.retry_backoff_max)
                continue
            self.metrics.processed[inbound.tp] += 1
            if durable:
                await self._commit_positions(self._require_consumer(), durable)
            return

    # --- commits -----------------------------------------------------------------------------

    async def _maybe_commit(self, consumer: AIOKafkaConsumer) -> None:
        due = (
            self._uncommitted >= self._settings.commit_every
            or self._clock() - self._last_commit >= self._settings.commit_interval
        )
        if due and self._handled:
            await self._commit(consumer, list(self._handled))
        if due:
            await self._record_lag(consumer)

    async def _commit(self, consumer: AIOKafkaConsumer, partitions: list[TopicPartition]) -> None:
        handled = {tp: self._handled[tp] for tp in partitions if tp in self._handled}
        if not handled:
            return
        await self._commit_positions(consumer, await self._handler.flush(handled))
        self._uncommitted = 0
        self._last_commit = self._clock()

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
        async with self._working:
            self._revoked_partitions.update(partitions)
            await self._revoke(partitions)

    async def _revoke(self, partitions: list[TopicPartition]) -> None:
        consumer = self._require_consumer()
        await self._commit(consumer, partitions)
        await self._handler.revoked(partitions)
        for tp in partitions:
            self._windows.pop(tp, None)
            self._handled.pop(tp, None)
            self.metrics.lag.pop(tp, None)

    async def _assigned(self, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", sorted(partitions))
        self._revoked_partitions.difference_update(partitions)
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
            log.info(
                "%s at %d: dedupe window of %d ids rebuilt from the log in %.2fs",
                tp,
                offset,
                len(window),
                time.perf_counter() - started,
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
            for record in batch.get(tp, []):
                if record.offset >= position:
                    break
                message_id = _message_id(codec, record)
                if message_id is not None:
                    window.remember(message_id, record.timestamp)
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


def _message_id(codec: PushCodec, record: ConsumerRecord[bytes, bytes]) -> str | None:
    if record.value is None:
        return None
    try:
        message_id: str = codec.decode(record.value)["messageId"]
    except SchemaError:
        return None  # it went to the DLQ when it was judged, and was never remembered
    return message_id
