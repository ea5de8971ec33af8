"""The router's ``Handler``: each push to the topics and HTTP endpoints its rules name.

Topic outputs are exactly once for ``read_committed`` readers: consume-transform-produce in Kafka
transactions. ``handle`` buffers the routed records (the input's Avro value, key and timestamp,
plus headers naming the rule) per input partition, with no I/O; ``flush`` starts each partition's
transaction in the background: its buffered records as one record batch per output partition,
its position sent to the transaction, commit. The router goes on routing meanwhile; a partition
has at most one transaction in flight (its next one waits, growing, up to ``commit_every``
records), and a revoke or a stop waits for every one. ``flush`` returns only the positions of
partitions that routed nothing to a topic, for the runtime to commit. A crash aborts (or a
successor fences) the open transaction, and the successor re-reads from the committed position.

Fencing: one transactional producer per *input partition*, ``<prefix>.<topic>.<partition>``
(pre-KIP-447 Kafka Streams; aiokafka cannot fence by consumer-group generation). Whichever
process owns a partition now initialises that id, which aborts the open transaction of the
previous owner and fences it: a zombie can no longer commit outputs or offsets for it.

HTTP outputs are at least once: the first attempt runs in the background (``FirstAttempts``);
a commit waits at most ``flush_grace`` for attempts in flight, then parks every delivery not yet
done in the first delay topic *inside the transaction*, so the delivery is either retried later
or (after a crash) re-attempted with the push. Refused deliveries (4xx) go to the DLQ.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, NamedTuple

from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.producer.message_accumulator import BatchBuilder

from consumers.router.delivery import (
    H_ENDPOINT,
    H_RULE,
    IN_FLIGHT,
    Deliverer,
    Delivery,
    FirstAttempts,
    Headers,
    Parked,
    Verdict,
    parked,
)
from consumers.router.exceptions import RouterError
from consumers.router.metrics import RouterMetrics
from consumers.router.rules import DEFAULT, VIEW, PostTo, Rules, ToTopic
from consumers.router.settings import RouterSettings
from consumers.router.settlements import write_settlement
from consumers.runtime.deadletters import DeadLetters
from consumers.runtime.handler import Handler, Inbound
from consumers.runtime.outcomes import Positions
from schemas import PushCodec
from uplink.exceptions import KafkaRefused
from uplink.kafka import KafkaClients, Producer
from uplink.settings import WorkerSettings

log = logging.getLogger(__name__)

SOURCE_HEADER = "uplink-source"
# How long a stopping router waits for the settlements of late answers it has (settlements.py).
SETTLE_SECONDS = 10.0


class KeyHashes:
    """aiokafka's default partitioner, with the murmur2 of each key remembered: a routed
    record keeps its conversation key, and hashing it in pure Python is a visible share of the
    router's time (bench/router_throughput.py)."""

    def __init__(self, limit: int = 100_000) -> None:
        self._hashes: dict[bytes, int] = {}
        self._limit = limit

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return DefaultPartitioner()(key, all_partitions, available)  # type: ignore[no-any-return]
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._limit:
                self._hashes.clear()  # conversations come and go: start over, rarely
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


class OutputRecord(NamedTuple):
    """A record for an output topic, kept until its transaction is sent."""

    topic: str
    value: bytes
    key: bytes | None
    timestamp: int
    headers: Headers


class TransactionalOutputs:
    """One transactional producer per input partition, and each partition's outputs until its
    next transaction.

    ``add`` only buffers (no I/O per record); ``commit`` sends a partition's outputs as record
    batches, its position, and commits, in the background: the router reads and routes the
    next records meanwhile, and the partition's following commit first waits for this one
    (``settle``). A failed transaction marks its partition failed (a done-callback), so its
    next record stops the worker rather than being routed into a transaction that cannot
    commit.

    Producers start as partitions are assigned (``prepare``: all at once, and the previous
    owner is fenced before any record is routed) or else when first needed.
    """

    def __init__(
        self,
        worker: WorkerSettings,
        settings: RouterSettings,
        failed: set[TopicPartition],
        clients: KafkaClients,
    ) -> None:
        self._worker = worker
        self._clients = clients
        self._prefix = settings.transactional_prefix or worker.group
        self._producers: dict[TopicPartition, asyncio.Task[AIOKafkaProducer]] = {}
        self._buffered: dict[TopicPartition, list[OutputRecord | Parked]] = {}
        self._commits: dict[TopicPartition, asyncio.Task[None]] = {}
        self._failed = failed
        self.refused: BaseException | None = None  # Kafka refused a transaction (an ACL)
        self._partitioner = KeyHashes()

    def prepare(self, partitions: list[TopicPartition]) -> None:
        """Start the partitions' producers in the background (records may arrive meanwhile:
        ``commit`` waits for the same start)."""
        for tp in partitions:
            self._starting(tp)

    def _starting(self, tp: TopicPartition) -> asyncio.Task[AIOKafkaProducer]:
        task = self._producers.get(tp)
        if task is None:
            task = self._producers[tp] = asyncio.create_task(self._start(tp))
        return task

    async def _start(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = self._clients.producer(
            transactional_id=f"{self._prefix}.{tp.topic}.{tp.partition}",
            # The commit waits for the last batches, so lingering only delays it; and the next
            # transaction's first AddPartitions often meets CONCURRENT_TRANSACTIONS while the
            # last one's markers are written, where the default backoff stalls the commit
            # (bench/router_throughput.py).
            linger_ms=0,
            retry_backoff_ms=20,
            max_batch_size=256 * 1024,
            max_request_size=self._worker.kafka.max_request_size,
        )
        try:
            await self._clients.start(producer)  # InitProducerId: fences the previous owner
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def producer(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The partition's producer, started (which fenced the partition's previous owner)."""
        return await self._starting(tp)

    def add(self, tp: TopicPartition, output: OutputRecord | Parked) -> None:
        """Buffer an output of input partition ``tp`` for its next transaction."""
        buffered = self._buffered.get(tp)
        if buffered is None:
            buffered = self._buffered[tp] = []
        buffered.append(output)

    def has_outputs(self, tp: TopicPartition) -> bool:
        return tp in self._buffered

    def commit(self, tp: TopicPartition, position: int, group: str) -> asyncio.Task[None]:
        """Start committing ``tp``'s buffered outputs with its position, in the background;
        the previous commit of ``tp`` must be settled."""
        if tp in self._commits:
            raise RuntimeError(f"{tp}: the previous transaction is not settled")
        outputs = self._buffered.pop(tp, [])
        task = asyncio.create_task(self._commit(tp, outputs, position, group))
        self._commits[tp] = task
        task.add_done_callback(lambda done: self._committed(tp, done))
        return task

    def _committed(self, tp: TopicPartition, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._failed.add(tp)  # its next record stops the worker (Router.handle)
            if isinstance(task.exception(), KafkaRefused):
                self.refused = task.exception()  # raised as the cause: a configuration error

    async def _commit(
        self, tp: TopicPartition, outputs: list[OutputRecord | Parked], position: int, group: str
    ) -> None:
        try:
            producer = await self._starting(tp)
            await producer.begin_transaction()
            try:
                sent = await self._send(producer, outputs)
                await producer.send_offsets_to_transaction({tp: position}, group)
                await producer.commit_transaction()
                await asyncio.gather(*sent)  # done by now: a failed batch raises here
            except BaseException:
                await self.discard(tp)  # aborts the transaction
                raise
        except KafkaError as exc:
            raise RouterError(f"transaction of {tp} not committed: {exc!r}") from exc

    async def _send(
        self, producer: AIOKafkaProducer, outputs: list[OutputRecord | Parked]
    ) -> list[asyncio.Future[Any]]:
        """The outputs as one record batch per output partition (a batch costs the producer
        what a single ``send`` does), partitioned by key as ``send`` would."""
        by_topic: dict[str, list[OutputRecord | Parked]] = {}
        for output in outputs:
            by_topic.setdefault(output.topic, []).append(output)
        sent: list[asyncio.Future[Any]] = []
        for topic, records in by_topic.items():
            partitions = sorted(await producer.partitions_for(topic))
            builders: dict[int, BatchBuilder] = {}
            for record in records:
                partition = self._partitioner(record.key, partitions, partitions)
                builder = builders.get(partition)
                if builder is None:
                    builder = builders[partition] = producer.create_batch()
                timestamp = record.timestamp if type(record) is OutputRecord else None
                while builder.append(
                    key=record.key, value=record.value, timestamp=timestamp, headers=record.headers
                ) is None:  # fmt: skip
                    if builder.record_count() == 0:  # aiokafka takes any first record: never
                        raise RouterError(f"a record for {topic} that no batch takes")
                    # Full: send it, and start the partition's next batch with this record.
                    sent.append(await producer.send_batch(builder, topic, partition=partition))
                    builder = builders[partition] = producer.create_batch()
            for partition, builder in builders.items():
                sent.append(await producer.send_batch(builder, topic, partition=partition))
        return sent

    def busy(self, tp: TopicPartition) -> bool:
        """Whether ``tp``'s last transaction is still being committed."""
        task = self._commits.get(tp)
        return task is not None and not task.done()

    def buffered(self, tp: TopicPartition) -> int:
        return len(self._buffered.get(tp, ()))

    async def settle(self, tp: TopicPartition) -> None:
        """Wait for ``tp``'s commit in flight; raises RouterError if it failed."""
        task = self._commits.pop(tp, None)
        if task is not None:
            await task

    async def discard(self, tp: TopicPartition) -> None:
        """Forget the partition's outputs and close its producer (settle its commit first): an
        open transaction is aborted by the broker, or by the next owner's fencing."""
        self._buffered.pop(tp, None)
        task = self._producers.pop(tp, None)
        if task is None:
            return
        try:
            producer = await task
        except (KafkaError, KafkaRefused, asyncio.CancelledError):
            return  # never started: nothing to close
        try:
            await producer.stop()
        except KafkaError:
            log.warning("closing the producer of %s failed", tp, exc_info=True)

    async def stop(self) -> None:
        """Settle every commit in flight and close; raises the first failure, after closing."""
        failures: list[BaseException] = []
        for tp in list(self._commits):
            try:
                await self.settle(tp)
            except RouterError as exc:
                failures.append(exc)
        for tp in list(self._producers):
            await self.discard(tp)
        if failures:
            raise failures[0]


class Router(Handler):
    """The router ``Handler``; ``stop()`` settles its transactions and closes their producers."""

    def __init__(
        self,
        rules: Rules,
        worker: WorkerSettings,
        settings: RouterSettings,
        deliverer: Deliverer,
        dead_letters: DeadLetters,
        metrics: RouterMetrics,
        codec: PushCodec,
        clients: KafkaClients | None = None,
        redrive: bool = False,
        settlements: Producer | None = None,
    ) -> None:
        self._rules = rules
        # Where a late answer settles its parked copy for whichever process re-sends it
        # (settlements.py); None: only this process's deliverer remembers it.
        self._settlements = settlements
        # Parked copies in the partition's next transaction, and settlements being written.
        self._copies: dict[TopicPartition, list[asyncio.Future[bool]]] = {}
        self._settling: set[asyncio.Task[None]] = set()
        # The reader of the re-drive topic: a dead letter naming the endpoint that refused it
        # is that one delivery again, not the push routed anew (`uplink dlq redrive`).
        self._redrive = redrive
        self._deliverer = deliverer
        # The rules read a dozen fields: a view of those costs a third of the full decode.
        self._view = codec.viewer(VIEW)
        self._worker = worker
        self._settings = settings
        self._dead_letters = dead_letters
        self._metrics = metrics
        # A partition whose transaction failed: nothing of it may be committed any more.
        self._failed: set[TopicPartition] = set()
        self._outputs = TransactionalOutputs(
            worker, settings, self._failed, clients or KafkaClients(worker.kafka)
        )
        self._first = FirstAttempts(deliverer, answered_late=self._answered_late)
        self._owned: set[TopicPartition] = set()
        # Positions whose transaction waits for the partition's previous one (``flush``), and
        # partitions handed over with their last transaction failed (reported at ``stop``).
        self._deferred: dict[TopicPartition, int] = {}
        # A deferred transaction grows up to this many outputs (the commit policy's count).
        self._growth = worker.commit_every if worker.commit_every is not None else 1000
        self._lost: set[TopicPartition] = set()

    @property
    def metrics(self) -> RouterMetrics:
        return self._metrics

    @property
    def partitions(self) -> frozenset[TopicPartition]:
        """The input partitions this router owns (as of the last rebalance)."""
        return frozenset(self._owned)

    async def stop(self) -> None:
        """Settle the transactions in flight and close; raises RouterError if a transaction of
        a partition still owned failed (its next owner routes those records again). The
        deliverer is its maker's to stop (after this)."""
        await self._first.stop()
        try:
            await self._outputs.stop()
        finally:
            self._copied(list(self._copies), committed=None)
            await self._settled()
        if self._failed or self._lost:
            failed = sorted(self._failed | self._lost)
            names = ", ".join(f"{tp.topic}/{tp.partition}" for tp in failed)
            raise RouterError(f"transactions of {names} not committed") from self._outputs.refused

    # --- Handler -----------------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> Positions | None:
        tp, record = inbound.tp, inbound.record
        if tp in self._failed:
            raise RouterError(f"{tp}: an earlier transaction failed") from self._outputs.refused
        if self._redrive:
            endpoint = _header(record, H_ENDPOINT)
            if endpoint is not None:
                await self._deliver_again(inbound, endpoint)
                return None
        routing = self._rules.route(self._view(inbound.value))
        if routing.posts:
            # Deliveries carry `raw`: decoded before anything is routed, so a datum corrupt past
            # the view goes to the DLQ whole rather than after its topic outputs.
            raw = inbound.push["raw"]
        metrics = self._metrics
        for name in routing.matched or (DEFAULT,):
            metrics.matches[name] += 1
        source: tuple[str, bytes] | None = None
        for output in routing.outputs:
            metrics.outputs[output.label] += 1
            action = output.action
            if type(action) is ToTopic:
                if source is None:
                    where = f"{tp.topic}/{tp.partition}@{record.offset}"
                    source = (SOURCE_HEADER, where.encode())
                headers = [*(record.headers or ()), output.rule_header, source]
                self._outputs.add(
                    tp,
                    OutputRecord(
                        action.topic, inbound.value, record.key, record.timestamp, headers
                    ),
                )
            elif type(action) is PostTo:
                self._first.submit(
                    tp, Delivery(action.endpoint, output.rule, record, inbound.message_id, raw)
                )
        return None

    async def _deliver_again(self, inbound: Inbound, endpoint: str) -> None:
        if self._deliverer.endpoint(endpoint) is None:
            reason = f"http:{endpoint}: endpoint {endpoint!r} is not configured"
            await self._dead_letters.send(inbound.record, reason)
            return
        rule = _header(inbound.record, H_RULE) or "redrive"
        raw = inbound.push["raw"]
        self._first.submit(
            inbound.tp, Delivery(endpoint, rule, inbound.record, inbound.message_id, raw)
        )

    async def flush(self, handled: Positions) -> Positions:
        """Park undelivered HTTP outputs, then start each partition's transaction (its outputs
        and position) in the background; partitions with no outputs go back to the runtime
        to commit.

        A partition whose previous transaction the broker is still committing waits for a later
        flush (or its revoke), up to ``commit_every`` outputs: under load transactions grow
        rather than queue, and a partition never has two in flight.
        """
        parked = await self._first.settle(handled, self._settings.flush_grace)
        for delivery in parked:
            await self._park(delivery)
        plain: Positions = {}
        outputs = self._outputs
        for tp, position in handled.items():
            if tp in self._failed:
                continue
            if outputs.busy(tp) and outputs.buffered(tp) < self._growth:
                self._deferred[tp] = position
                continue
            self._deferred.pop(tp, None)
            await outputs.settle(tp)  # a failure raises (and marked the partition failed)
            if outputs.has_outputs(tp):
                self._copied([tp], outputs.commit(tp, position, self._worker.group))
            else:
                plain[tp] = position
        return plain

    def _copied(
        self, partitions: list[TopicPartition], committed: asyncio.Task[None] | None
    ) -> None:
        """The parked copies of ``partitions`` go with ``committed`` (None: they never will):
        each learns whether it reached the delay topic when the transaction ends."""
        for tp in partitions:
            copies = self._copies.pop(tp, [])
            if committed is None:
                _resolve(copies, False)
            elif copies:
                committed.add_done_callback(_when_committed(copies))

    def _answered_late(self, delivery: Delivery) -> None:
        """The final answer to a delivery parked in flight: a refusal is dead-lettered at once,
        and either settles the parked copy (settlements.py)."""
        task = asyncio.create_task(self._settle(delivery))
        self._settling.add(task)
        task.add_done_callback(self._settle_done)

    def _settle_done(self, task: asyncio.Task[None]) -> None:
        self._settling.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its parked copy is sent again when due (same Idempotency-Key), and a refusal
            # dead-lettered then.
            log.warning("a late answer was not settled", exc_info=task.exception())

    async def _settle(self, delivery: Delivery) -> None:
        attempt = delivery.attempt
        if attempt is not None and attempt.verdict is Verdict.REFUSED:
            await self._dead_letter(delivery)
        copy = delivery.copy
        if self._settlements is None or copy is None:
            return
        # After the copy: the re-sender looks for it in the copy's partition, past the copy.
        if await copy:
            await write_settlement(self._settlements, self._settings.delay_topic(1), delivery)

    async def _settled(self) -> None:
        """At stop: the settlements under way are written (bounded; what is not, the next
        owner sends again, with the same Idempotency-Key)."""
        if not self._settling:
            return
        _, pending = await asyncio.wait(set(self._settling), timeout=SETTLE_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _dead_letter(self, delivery: Delivery) -> None:
        reason = delivery.attempt.reason if delivery.attempt is not None else ""
        await self._dead_letters.send(delivery.record, f"http:{delivery.endpoint}: {reason}")
        self._metrics.dead_lettered[delivery.endpoint] += 1

    async def _park(self, delivery: Delivery) -> None:
        record = delivery.record
        tp = TopicPartition(record.topic, record.partition)
        # In flight when settled (its answer may have come since): parked as it was then.
        attempt = None if delivery.parked else delivery.attempt
        if attempt is not None and attempt.verdict is Verdict.REFUSED:
            await self._dead_letter(delivery)
            return
        reason = attempt.reason if attempt is not None else IN_FLIGHT
        attempts = 0 if attempt is not None and attempt.reason.startswith("too many") else 1
        if tp in self._failed:
            if delivery.copy is not None:
                _resolve([delivery.copy], False)
            return  # its offsets will not be committed: the push is routed again
        if delivery.copy is not None:
            self._copies.setdefault(tp, []).append(delivery.copy)
        self._outputs.add(
            tp,
            parked(self._settings, record, delivery.endpoint, delivery.rule, attempts, reason, 1),
        )
        self._metrics.retries[delivery.endpoint] += 1

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        """Fence the partitions' previous owners now, and start their producers together."""
        self._owned.update(partitions)
        if not self._redrive:
            # The re-drive topic is mostly empty: its producers start when first needed (the
            # first commit of a partition fences its previous owner then).
            self._outputs.prepare(partitions)

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        """After their flush, before the next owner starts: the partitions' deferred
        transactions are committed and every one in flight settled."""
        self._owned.difference_update(partitions)
        for tp in partitions:
            try:
                position = self._deferred.pop(tp, None)
                if position is not None and tp not in self._failed:
                    await self._outputs.settle(tp)
                    self._copied([tp], self._outputs.commit(tp, position, self._worker.group))
                await self._outputs.settle(tp)
            except RouterError:
                # Not committed: its next owner routes these records again.
                log.warning("%s handed over with its last transaction failed", tp, exc_info=True)
                self._lost.add(tp)
            finally:
                self._copied([tp], committed=None)  # not in a transaction: never will be
                await self._outputs.discard(tp)
                self._failed.discard(tp)


def _when_committed(copies: list[asyncio.Future[bool]]) -> Callable[[asyncio.Task[None]], None]:
    def done(transaction: asyncio.Task[None]) -> None:
        _resolve(copies, not transaction.cancelled() and transaction.exception() is None)

    return done


def _resolve(copies: list[asyncio.Future[bool]], reached: bool) -> None:
    for copy in copies:
        if not copy.done():
            copy.set_result(reached)


def _header(record: ConsumerRecord[bytes, bytes], name: str) -> str | None:
    """The header's last value (a dead letter keeps the headers of its earlier lives first)."""
    found: str | None = None
    for key, value in record.headers or ():
        if key == name:
            found = value.decode("utf-8", "replace")
    return found
