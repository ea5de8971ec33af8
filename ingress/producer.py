"""The ingress's Kafka producer: acks=all, bounded in-flight, an answer within the timeout."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnsupportedVersionError

from ingress.batches import PartitionBatches
from ingress.exceptions import NotDurable, Overloaded
from uplink._partition import partition
from uplink.kafka import KafkaClients
from uplink.resources import Resource

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
# aiokafka's C record builder takes a list (and only reads it).
_NO_HEADERS: Headers = []


class DurableProducer(Resource):
    """Sends a record and returns only once the broker has acknowledged it (acks=all).

    ``start()`` does not wait for the broker: ``prepare`` (creating topics) and the connection
    run in the background, retrying, so an ingress started before its broker answers 503 (and
    /readyz says not ready) until then.
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
    ) -> None:
        self._clients = clients
        self._prepare = prepare
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._linger_ms = linger_ms
        self._batch_bytes = batch_bytes
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._closed = False
        self._batches: PartitionBatches | None = None

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def connected(self) -> bool:
        return self._producer is not None

    async def start(self) -> None:
        if self._connecting is not None:
            return
        self._connecting = asyncio.create_task(self._connect(), name="kafka-connect")
        self._connecting.add_done_callback(_log_crash)

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
        while not self._closed:
            producer = self._new_producer(idempotent)
            try:
                if self._prepare is not None:
                    await self._prepare()
                await producer.start()
            except UnsupportedVersionError:
                await producer.stop()
                # "the idempotent producer where the broker allows": fall back to plain acks=all.
                log.warning("broker refuses the idempotent producer; using acks=all without it")
                idempotent = False
                continue
            except KafkaError as exc:
                await producer.stop()
                log.warning("Kafka not ready (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 5.0)
                continue
            if self._closed:
                await producer.stop()
                return
            self._batches = PartitionBatches(producer, timeout=self._timeout)
            self._batches.start()
            self._producer = producer
            log.info("producer connected to %s", self._clients.settings.bootstrap_servers)
            return

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> None:
        """Return once the record is durable; raise NotDurable (or Overloaded) otherwise."""
        producer, batches = self._producer, self._batches
        if producer is None or batches is None:
            raise NotDurable("not connected to Kafka yet")
        if self._in_flight >= self._max_in_flight:
            raise Overloaded(f"{self._in_flight} pushes already await the broker")
        self._in_flight += 1
        try:
            count = len(producer.client.cluster.partitions_for_topic(topic) or ())
            if not count:
                count = await self._partition_count(producer, topic)
            # The Java client's choice for a key (so any producer agrees), else any partition.
            chosen = partition(key, count) if key is not None else random.randrange(count)
            await batches.append(topic, chosen, key, value, headers or _NO_HEADERS)
        finally:
            self._in_flight -= 1

    async def _partition_count(self, producer: AIOKafkaProducer, topic: str) -> int:
        """The first record of a topic waits for its metadata, within the produce timeout."""
        try:
            async with asyncio.timeout(self._timeout):
                return len(await producer.partitions_for(topic))
        except TimeoutError:
            reason = f"no metadata for {topic} from Kafka within {self._timeout:g}s"
            raise NotDurable(reason) from None
        except KafkaError as exc:
            raise NotDurable(f"Kafka has no metadata for {topic}: {exc!r}") from exc

    async def check(self, timeout: float = 2.0) -> bool:
        """A metadata round trip: is a broker answering right now?"""
        producer = self._producer
        if producer is None:
            return False
        try:
            async with asyncio.timeout(timeout):
                await producer.client.fetch_all_metadata()
        except (TimeoutError, KafkaError):
            return False
        return True

    async def stop(self) -> None:
        """Flush what is buffered (in-flight pushes still get their answer) and disconnect."""
        self._closed = True
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        producer, self._producer = self._producer, None
        batches, self._batches = self._batches, None
        try:
            if batches is not None:
                async with asyncio.timeout(self._timeout + 1):  # bounded, the broker may be gone
                    await batches.flush()
        except TimeoutError:
            log.error("Kafka unreachable at shutdown: batches not handed over were answered 503")
        finally:
            try:
                if producer is not None:
                    await self._flush_and_close(producer)
            finally:
                if batches is not None:
                    batches.stop()  # last: pushes still waiting keep their deadline until here

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
