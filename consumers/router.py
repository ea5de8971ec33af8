"""The router's ``Handler``: each push to the topics and HTTP endpoints its rules name.

Topic outputs are exactly once for ``read_committed`` readers: consume-transform-produce in Kafka
transactions. The first record of a partition after a commit begins a transaction; ``handle``
produces the routed records (the input's Avro value, key and timestamp, plus headers naming the
rule); ``flush`` sends the partition's position to the same transaction and commits it, and
returns nothing for the runtime to commit. A crash aborts (or a successor fences) the open
transaction, and the successor re-reads from the committed position.

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

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from consumers.deadletters import DeadLetters
from consumers.delivery import Deliverer, Delivery, FirstAttempts, Outcome, park
from consumers.metrics import RouterMetrics
from consumers.rules import DEFAULT, VIEW, PostTo, Rules, ToTopic
from consumers.runtime import Inbound, Positions
from schemas import PushCodec
from uplink.exceptions import UplinkError
from uplink.resources import Resource
from uplink.settings import RouterSettings, WorkerSettings
from uplink.topics import TopicSpec, topic_configs

log = logging.getLogger(__name__)

SOURCE_HEADER = "uplink-source"


def router_topics(
    rules: Rules, worker: WorkerSettings, settings: RouterSettings
) -> list[TopicSpec]:
    """The topics the router writes besides the DLQ: rule outputs and delay topics."""
    configs = topic_configs(worker.topics, worker.kafka.max_request_size)
    names = sorted(rules.topics | set(settings.delay_topics))
    return [TopicSpec(name, worker.topics.partitions, configs) for name in names]


class RouterError(UplinkError):
    """A transaction failed: this process stops (not a ``ConsumerError``, so the runtime does
    not dead-letter the record) and the partition's next owner redoes it from the committed
    position."""


class KeyHashes:
    """aiokafka's default partitioner, with the murmur2 of each key remembered: a routed
    record keeps its conversation key, and hashing it in pure Python was ~10 % of the router's
    time (bench/router_throughput.py)."""

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


class TransactionalOutputs:
    """One transactional producer per input partition, started as the partition is assigned
    (``prepare``: all at once, and the previous owner is fenced before any record is routed)
    or else when first needed."""

    def __init__(self, worker: WorkerSettings, settings: RouterSettings) -> None:
        self._worker = worker
        self._prefix = settings.transactional_prefix or worker.group
        self._producers: dict[TopicPartition, asyncio.Task[AIOKafkaProducer]] = {}
        self._open: set[TopicPartition] = set()
        self._partitioner = KeyHashes()

    def prepare(self, partitions: list[TopicPartition]) -> None:
        """Start the partitions' producers in the background (records may arrive meanwhile:
        ``begin`` waits for the same start)."""
        for tp in partitions:
            self._starting(tp)

    def _starting(self, tp: TopicPartition) -> asyncio.Task[AIOKafkaProducer]:
        task = self._producers.get(tp)
        if task is None:
            task = self._producers[tp] = asyncio.create_task(self._start(tp))
        return task

    async def _start(self, tp: TopicPartition) -> AIOKafkaProducer:
        producer = AIOKafkaProducer(
            **self._worker.kafka.client_options(),
            transactional_id=f"{self._prefix}.{tp.topic}.{tp.partition}",
            acks="all",
            enable_idempotence=True,
            # Measured (bench/router_throughput.py): the commit waits for the last batches,
            # so lingering only delays it; and the next transaction's first AddPartitions
            # often meets CONCURRENT_TRANSACTIONS while the last one's markers are written,
            # where the 100 ms default backoff more than doubled the commit time.
            linger_ms=0,
            retry_backoff_ms=20,
            max_batch_size=256 * 1024,
            max_request_size=self._worker.kafka.max_request_size,
            partitioner=self._partitioner,
        )
        try:
            await producer.start()  # InitProducerId: fences the previous owner
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def begin(self, tp: TopicPartition) -> AIOKafkaProducer:
        """The partition's producer, inside a transaction."""
        task = self._producers.get(tp)
        producer = task.result() if task is not None and task.done() else None
        if producer is None:
            producer = await self._starting(tp)
        if tp not in self._open:
            await producer.begin_transaction()
            self._open.add(tp)
        return producer

    def is_open(self, tp: TopicPartition) -> bool:
        return tp in self._open

    async def commit(self, tp: TopicPartition, position: int, group: str) -> None:
        producer = await self._producers[tp]
        try:
            await producer.send_offsets_to_transaction({tp: position}, group)
            await producer.commit_transaction()
        except KafkaError as exc:
            await self.discard(tp)
            raise RouterError(f"transaction of {tp} not committed: {exc!r}") from exc
        finally:
            self._open.discard(tp)

    async def discard(self, tp: TopicPartition) -> None:
        """Close the partition's producer; an open transaction is aborted by the broker (or by
        the next owner's fencing)."""
        self._open.discard(tp)
        task = self._producers.pop(tp, None)
        if task is None:
            return
        try:
            producer = await task
        except (KafkaError, asyncio.CancelledError):
            return  # never started: nothing to close
        try:
            await producer.stop()
        except KafkaError:
            log.warning("closing the producer of %s failed", tp, exc_info=True)

    async def stop(self) -> None:
        for tp in list(self._producers):
            await self.discard(tp)


class Router(Resource):
    """The router ``Handler``. ``start()``/``stop()`` (the producers, the HTTP clients)."""

    def __init__(
        self,
        rules: Rules,
        worker: WorkerSettings,
        settings: RouterSettings,
        deliverer: Deliverer,
        dead_letters: DeadLetters,
        metrics: RouterMetrics,
        codec: PushCodec,
    ) -> None:
        self._rules = rules
        # The rules read a dozen fields: a view of those costs a third of the full decode.
        self._view = codec.viewer(VIEW)
        self._worker = worker
        self._settings = settings
        self._deliverer = deliverer
        self._dead_letters = dead_letters
        self._metrics = metrics
        self._outputs = TransactionalOutputs(worker, settings)
        self._first = FirstAttempts(deliverer)
        # A partition whose transaction failed: nothing of it may be committed any more.
        self._failed: set[TopicPartition] = set()
        self._owned: set[TopicPartition] = set()

    @property
    def partitions(self) -> frozenset[TopicPartition]:
        """The input partitions this router owns (as of the last rebalance)."""
        return frozenset(self._owned)

    async def start(self) -> None:
        await self._deliverer.start()

    async def stop(self) -> None:
        try:
            await self._first.stop()
            await self._outputs.stop()
        finally:
            await self._deliverer.stop()

    # --- Handler -----------------------------------------------------------------------------

    async def handle(self, inbound: Inbound) -> Positions | None:
        tp, record = inbound.tp, inbound.record
        if tp in self._failed:
            raise RouterError(f"{tp}: an earlier transaction failed")
        routing = self._rules.route(self._view(inbound.value))
        if routing.posts:
            # Deliveries carry `raw`: decoded before anything is sent, so a datum corrupt past
            # the view goes to the DLQ whole rather than after its topic outputs.
            raw = inbound.push["raw"]
        metrics = self._metrics
        for name in routing.matched or (DEFAULT,):
            metrics.matches[name] += 1
        for output in routing.outputs:
            metrics.outputs[output.label] += 1
            action = output.action
            if type(action) is ToTopic:
                producer = await self._outputs.begin(tp)
                try:
                    await producer.send(
                        action.topic,
                        record.value,
                        key=record.key,
                        timestamp_ms=record.timestamp,
                        headers=[
                            *(record.headers or ()),
                            output.rule_header,
                            (SOURCE_HEADER, f"{tp.topic}/{tp.partition}@{record.offset}".encode()),
                        ],
                    )
                except KafkaError as exc:
                    self._failed.add(tp)
                    await self._outputs.discard(tp)
                    raise RouterError(f"cannot produce to {action.topic}: {exc!r}") from exc
            elif type(action) is PostTo:
                self._first.submit(
                    tp,
                    Delivery(action.endpoint, output.rule, record, inbound.message_id, raw),
                )
        return None

    async def flush(self, handled: Positions) -> Positions:
        """Park undelivered HTTP outputs, then commit each partition's transaction with its
        position; partitions without a transaction go back to the runtime to commit."""
        parked = await self._first.settle(handled, self._settings.flush_grace)
        for delivery in parked:
            await self._park(delivery)
        plain: Positions = {}
        commits = []
        for tp, position in handled.items():
            if tp in self._failed:
                continue
            if self._outputs.is_open(tp):
                commits.append(self._commit(tp, position))
            else:
                plain[tp] = position
        results = await asyncio.gather(*commits, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return plain

    async def _commit(self, tp: TopicPartition, position: int) -> None:
        try:
            await self._outputs.commit(tp, position, self._worker.group)
        except RouterError:
            self._failed.add(tp)
            raise

    async def _park(self, delivery: Delivery) -> None:
        record = delivery.record
        tp = TopicPartition(record.topic, record.partition)
        attempt = delivery.attempt
        if attempt is not None and attempt.outcome is Outcome.REFUSED:
            await self._dead_letters.send(record, f"http:{delivery.endpoint}: {attempt.reason}")
            self._metrics.dead_lettered[delivery.endpoint] += 1
            return
        reason = attempt.reason if attempt is not None else "still in flight at commit"
        attempts = 0 if attempt is not None and attempt.reason.startswith("too many") else 1
        if tp in self._failed:
            return  # its offsets will not be committed: the push is routed again
        producer = await self._outputs.begin(tp)
        try:
            await park(
                producer, self._settings, record, delivery.endpoint, delivery.rule, attempts,
                reason, step=1,
            )  # fmt: skip
        except KafkaError as exc:
            self._failed.add(tp)
            await self._outputs.discard(tp)
            raise RouterError(f"cannot park a delivery of {tp}: {exc!r}") from exc
        self._metrics.retries[delivery.endpoint] += 1

    async def assigned(self, partitions: list[TopicPartition]) -> None:
        """Fence the partitions' previous owners now, and start their producers together."""
        self._owned.update(partitions)
        self._outputs.prepare(partitions)

    async def revoked(self, partitions: list[TopicPartition]) -> None:
        self._owned.difference_update(partitions)
        for tp in partitions:
            self._failed.discard(tp)
            await self._outputs.discard(tp)
