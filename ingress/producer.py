"""The ingress's Kafka producer: acks=all, bounded in-flight, an answer within the timeout,
and at once while no broker answers."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    UnsupportedVersionError,
)

from ingress.accumulator import Accumulator
from ingress.deadlines import DeadlineExceeded, Deadlines
from ingress.exceptions import NotDurable, Overloaded, Refused, Unreachable
from uplink._partition import partition
from uplink.exceptions import AuthenticationRefused, KafkaRefused
from uplink.kafka import KafkaClients, broker_answers
from uplink.reachability import Reachability
from uplink.refusals import Diagnosis, refusal
from uplink.resources import Resource

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

# The idempotent producer's state refused for good: once a partition's sequence has a gap (a
# batch lost across a broker's restart), the broker refuses every later batch of it, and
# aiokafka, unlike the Java client, never takes a new producer id. Seen in tests/compose: every
# push answered 503 for as long as the ingress ran. A new producer (new id, sequences from 0) is
# the way back (``DurableProducer._renew``).
SEQUENCE_REFUSED = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)


class DurableProducer(Resource):
    """Sends a record and returns only once the broker has acknowledged it (acks=all).

    ``start()`` does not wait for the broker: ``prepare`` (creating topics) and the connection
    run in the background, retrying, so an ingress started before its broker answers 503 (and
    /readyz says not ready) until then.

    Once no broker has answered for ``unreachable_after`` seconds, a send fails at once
    (``Unreachable``) rather than wait out the timeout, until a broker answers again. The record
    of a send that timed out is withdrawn from the producer's buffer while it has not been sent
    (ingress/accumulator.py), so the buffer does not grow with an outage's length. Records go
    straight into aiokafka's accumulator (``Accumulator``), not through ``send()``.

    Kafka refusing our credentials or an ACL is told apart from an outage: ``refused`` holds
    the refusal (for /readyz) until a broker accepts us again, and ``refusals`` counts them.

    A broker refusing the producer's sequence numbers (``SEQUENCE_REFUSED``) retires that
    producer and connects a new one: the pushes of its batches are answered 503 (the provider
    retries them), and ``renewals`` counts it.
    """

    def __init__(
        self,
        clients: KafkaClients,
        *,
        timeout: float,
        max_in_flight: int,
        linger_ms: int,
        batch_bytes: int = 16384,
        prepare: Callable[[], Awaitable[object]] | None = None,
        unreachable_after: float = 3.0,
        remind_every: float = 60.0,
        summary: Callable[[], str] = lambda: "",
    ) -> None:
        self._clients = clients
        self._prepare = prepare
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._linger_ms = linger_ms
        self._batch_bytes = batch_bytes
        self._producer: AIOKafkaProducer | None = None
        self._accumulator: Accumulator | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._deadlines = Deadlines(timeout, expired=lambda _: self._withdraw_later())
        # Partitions of each topic, by name: aiokafka's cluster copies the set on every ask.
        # Emptied whenever new metadata arrives (a topic may have grown).
        self._partition_counts: dict[str, int] = {}
        self._closed = False
        self._withdraw_soon = False
        self.withdrawn = 0  # records of refused sends dropped before they were ever sent
        self.refused: KafkaRefused | None = None
        self.refusals: Counter[str] = Counter()  # by kind: authentication, authorization
        self.renewals = 0  # producers retired for a refused sequence, and replaced
        self._retiring: set[asyncio.Task[None]] = set()
        self._diagnosis = Diagnosis(clients.settings)  # why no broker answers, when refused
        self.reachability = Reachability(
            self.check, after=unreachable_after, remind_every=remind_every, summary=summary
        )

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connected(self) -> bool:
        return self._producer is not None

    @property
    def buffered(self) -> int:
        """Records in the producer's buffer, not yet acknowledged."""
        return self._accumulator.buffered if self._accumulator is not None else 0

    async def start(self) -> None:
        if self._connecting is not None:
            return
        self._deadlines.start()
        await self.reachability.start()
        self._start_connecting()

    def _start_connecting(self) -> None:
        self._connecting = asyncio.create_task(self._connect(), name="kafka-connect")
        self._connecting.add_done_callback(_log_crash)

    def _renew(self, producer: AIOKafkaProducer, exc: KafkaError) -> None:
        """Retire ``producer`` (its sequence refused) and connect a new one. Once a producer:
        every push of its refused batches comes here."""
        if producer is not self._producer or self._closed:
            return
        self.renewals += 1
        log.error(
            "Kafka refused the producer's sequence numbers (%r): a new producer replaces it; "
            "the pushes it held are answered 503",
            exc,
        )
        self._producer = self._accumulator = None
        retiring = asyncio.create_task(self._flush_and_close(producer), name="kafka-retire")
        self._retiring.add(retiring)
        retiring.add_done_callback(self._retiring.discard)
        retiring.add_done_callback(_log_crash)
        self._start_connecting()

    def _new_producer(self, idempotent: bool) -> AIOKafkaProducer:
        return self._clients.producer(
            enable_idempotence=idempotent,
            linger_ms=self._linger_ms,
            max_batch_size=self._batch_bytes,
            max_request_size=self._clients.settings.max_request_size,
            # Batches that cannot reach the broker fail rather than wait for ever; the provider's
            # retry (1, 3, 5 min) is the real recovery path for a push we answered 503.
            request_timeout_ms=max(int(self._timeout * 1000), 1000),
            retry_backoff_ms=100,
        )

    async def _connect(self) -> None:
        idempotent = True
        delay = 0.2
        said = False
        while not self._closed:
            producer = self._new_producer(idempotent)
            try:
                if self._prepare is not None:
                    await self._prepare()
                await self._clients.start(producer)
            except UnsupportedVersionError:
                await producer.stop()
                # "the idempotent producer where the broker allows": fall back to plain acks=all.
                log.warning("broker refuses the idempotent producer; using acks=all without it")
                idempotent = False
                continue
            except (KafkaError, KafkaRefused) as exc:
                await producer.stop()
                refused = refusal(exc, self._clients.settings)
                if refused is not None:
                    self._refusal(refused)
                # Said once; the reachability log reminds of it while it lasts.
                level = logging.DEBUG if said else logging.WARNING
                log.log(level, "Kafka not ready (%r); retrying in %.1fs", exc, delay)
                said = True
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 5.0)
                continue
            except asyncio.CancelledError:
                # Stopped while connecting: close what was made (else aiokafka warns, unclosed).
                await asyncio.shield(producer.stop())
                raise
            if self._closed:
                await producer.stop()
                return
            self._accumulator = Accumulator(
                producer, self._clients.settings.max_request_size, acknowledged=self._acknowledged
            )
            self._partition_counts.clear()
            producer.client.cluster.add_listener(lambda _: self._partition_counts.clear())
            self._producer = producer
            self.refused = None
            self.reachability.answered()  # starting fetched the cluster's metadata
            log.info("producer connected to %s", self._clients.settings.bootstrap_servers)
            return

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Return once the record is durable; raise NotDurable (or Overloaded) otherwise."""
        # Both taken now: a renewal may replace them while this send awaits.
        producer, accumulator = self._producer, self._accumulator
        if producer is None or accumulator is None:
            raise NotDurable("not connected to Kafka yet")
        reachability = self.reachability
        if isinstance(self.refused, AuthenticationRefused):
            # Said by a diagnosis since a broker last answered us (``check`` clears it): a
            # produce would only wait out its timeout.
            raise Refused(str(self.refused))
        if not reachability.reachable:
            raise Unreachable(f"no Kafka broker has answered for {reachability.silent_for:.0f}s")
        if self._in_flight >= self._max_in_flight:
            raise Overloaded(f"{self._in_flight} pushes already await the broker")
        self._in_flight += 1
        try:
            partition = self._partition(producer, topic, key)
            if partition is None:
                # The topic's metadata is not known yet (its first record): ask for it, bounded.
                async with asyncio.timeout(self._timeout):
                    await producer.partitions_for(topic)
                partition = self._partition(producer, topic, key)
                assert partition is not None
            delivery = accumulator.append(topic, partition, key, value, headers or [])
            deadlines = self._deadlines
            deadlines.add(delivery)
            try:
                await delivery
            finally:
                deadlines.discard(delivery)
        except (DeadlineExceeded, TimeoutError):
            raise NotDurable(f"no acknowledgement from Kafka within {self._timeout:g}s") from None
        except KafkaError as exc:
            refused = refusal(exc, self._clients.settings)
            if refused is not None:
                self._refusal(refused)
                raise Refused(str(refused)) from exc
            if isinstance(exc, SEQUENCE_REFUSED):
                self._renew(producer, exc)
            raise NotDurable(f"Kafka refused the record: {exc!r}") from exc
        finally:
            self._in_flight -= 1

    def _acknowledged(self) -> None:
        """A batch was written (once a batch, not a push): a broker answers, and whatever
        was refused is not any more."""
        self.reachability.answered()
        self.refused = None

    def _refusal(self, refused: KafkaRefused) -> None:
        if self.refused is None or str(self.refused) != str(refused):
            log.error("%s", refused)  # said when it changes, not for every push it refuses
        self.refused = refused
        kind = "authentication" if isinstance(refused, AuthenticationRefused) else "authorization"
        self.refusals[kind] += 1

    def _withdraw_later(self) -> None:
        """Withdraw refused records once the deadline sweep's failed sends have run (they are
        scheduled before this callback): one pass over the buffer for all of them."""
        if not self._withdraw_soon:
            self._withdraw_soon = True
            asyncio.get_running_loop().call_soon(self._withdraw)

    def _withdraw(self) -> None:
        self._withdraw_soon = False
        if self._accumulator is not None:
            self.withdrawn += self._accumulator.withdraw_refused()

    def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int | None:
        """The Java client's choice (murmur2 of the key modulo the partition count), in C;
        without a key, aiokafka's partitioner's. None: the topic's metadata is not known yet."""
        if key is not None:
            count = self._partition_counts.get(topic)
            if count is not None:
                return partition(key, count)
        partitions = producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        if key is None:
            available = producer.client.cluster.available_partitions_for_topic(topic)
            return int(producer._partitioner(None, list(partitions), list(available or ())))
        self._partition_counts[topic] = len(partitions)
        return partition(key, len(partitions))

    async def check(self, timeout: float = 2.0) -> bool:
        """A metadata round trip: is a broker answering right now?"""
        producer = self._producer
        if producer is None:
            return False
        if not await broker_answers(producer.client, timeout):
            refused = await self._diagnosis()
            if refused is not None:
                self._refusal(refused)
            return False
        self.reachability.answered()
        if isinstance(self.refused, AuthenticationRefused):
            self.refused = None  # connected: the credentials are accepted again
        return True

    async def stop(self) -> None:
        """Flush what is buffered (in-flight pushes still get their answer) and disconnect."""
        self._closed = True
        await self.reachability.stop()
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        producer, self._producer = self._producer, None
        try:
            if producer is not None:
                await self._flush_and_close(producer)
            await asyncio.gather(*self._retiring)
        finally:
            self._deadlines.stop()  # last: sends still in flight keep their deadline

    async def _flush_and_close(self, producer: AIOKafkaProducer) -> None:
        try:
            # Bounded: with the broker gone, a flush would otherwise wait for ever. Every push
            # still buffered was already answered 503 by its own deadline.
            async with asyncio.timeout(self._timeout + 1):
                await producer.stop()
        except TimeoutError:
            log.error("Kafka unreachable at shutdown: unflushed records were answered 503")
            await producer.client.close()


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("Kafka connect task failed", exc_info=task.exception())
