"""Kafka clients, built in one place: the factory every part is handed, and one producer resource.

``KafkaClients`` is the seam: each part that talks to Kafka gets one (the wiring builds it from
the settings) and asks it for producers, consumers and admin clients, so the connection options
and uplink's defaults (acks=all and idempotence for producers, manual commits and read_committed
for consumers) are set here and nowhere else. ``start`` starts any of them, telling Kafka's
refusal of our credentials (a configuration error) from an outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from uplink._partition import partition
from uplink.resources import Resource
from uplink.settings import KafkaSettings

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]

_TOKENS = ("OAUTHBEARER", "AWS_MSK_IAM")


@dataclass(frozen=True)
class KafkaClients:
    settings: KafkaSettings

    def producer(self, **options: Any) -> AIOKafkaProducer:
        """acks=all and idempotent unless ``options`` say otherwise; not started."""
        defaults: dict[str, Any] = {
            "acks": "all",
            "enable_idempotence": True,
            "partitioner": java_partitioner,
        }
        return AIOKafkaProducer(**self.settings.client_options(), **{**defaults, **options})

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        """Manual commits only, and only committed transactions read; not started."""
        defaults: dict[str, Any] = {
            "enable_auto_commit": False,
            "isolation_level": "read_committed",
        }
        return AIOKafkaConsumer(
            *topics, **self.settings.client_options(), **{**defaults, **options}
        )

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.settings.client_options())

    async def start(
        self, client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient
    ) -> None:
        """``client.start()``; a failure that is Kafka refusing us raises ``KafkaRefused``
        (from the error), any other is raised as it is."""
        # Imported here: uplink.refusals builds on the settings' client options too.
        from uplink.refusals import diagnose, refusal

        if self.settings.sasl_mechanism in _TOKENS:
            # aiokafka does not read the broker's answer to a token (an error status, RFC 7628)
            # and goes on as if accepted: the broker then drops the connection, which looks
            # like an outage. Asked first, here, so a refused token stops start-up.
            refused = await diagnose(self.settings, tls=False)
            if refused is not None:
                raise refused
        try:
            await client.start()
        except KafkaError as exc:
            refused = refusal(exc, self.settings)
            if refused is None and isinstance(exc, KafkaConnectionError):
                refused = await diagnose(self.settings)
            if refused is not None:
                raise refused from exc
            raise


async def stop_consumer(consumer: AIOKafkaConsumer, patience: float = 1.0) -> None:
    """``consumer.stop()``, to its end and without hanging, around two faults of aiokafka 0.14.

    - Its fetch routine cancels its in-flight fetches after an assignment change inside
      ``suppress(CancelledError)``: a stop that lands then has its cancellation swallowed and
      ``stop()`` waits on the routine for ever. The routine is cancelled again every
      ``patience`` seconds until the stop ends.
    - A fetch cancelled in its back-off after a failed fetch (a broker lost, our credentials
      refused) raises CancelledError out of ``stop()``, which then leaves the other fetches and
      the connections open: those are closed here.

    Our own cancellation is raised as it is."""
    stopping = asyncio.ensure_future(consumer.stop())
    try:
        while True:
            done, _ = await asyncio.wait({stopping}, timeout=patience)
            if done:
                break
            fetcher = getattr(consumer, "_fetcher", None)
            routine: asyncio.Task[None] | None = getattr(fetcher, "_fetch_task", None)
            if routine is not None and not routine.done():
                routine.cancel()
        stopping.result()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            stopping.cancel()
            raise
        fetcher = getattr(consumer, "_fetcher", None)
        pending = list(getattr(fetcher, "_pending_tasks", ()))
        for fetch in pending:
            fetch.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await consumer._client.close()


def java_partitioner(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """aiokafka's DefaultPartitioner (the Java client's choice), with murmur2 in C: keyed
    records (router outputs, media events) land where any Kafka producer would put them."""
    if key is None:
        return random.choice(available or all_partitions)
    return all_partitions[partition(key, len(all_partitions))]


async def broker_answers(client: AIOKafkaClient, timeout: float) -> bool:
    """A metadata round trip: whether a broker answers within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await client.fetch_all_metadata()
    except (TimeoutError, KafkaError):
        return False
    return True


class Producer(Resource):
    """One started producer (acks=all, idempotent) whose ``send`` returns once the broker has
    the record. ``start()``/``stop()`` (both safe twice) or ``async with``; shared by the parts
    of a process that produce side records (dead letters, media events, parked deliveries)."""

    def __init__(self, clients: KafkaClients, **options: Any) -> None:
        self._clients = clients
        self._options = options
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        if self._producer is None:
            producer = self._clients.producer(**self._options)
            try:
                await self._clients.start(producer)
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def check(self, timeout: float) -> bool:
        """Whether a broker answers it now (the process's reachability probe)."""
        producer = self._producer
        return producer is not None and await broker_answers(producer.client, timeout)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Returns once the broker has the record (acks=all); raises aiokafka's KafkaError."""
        if self._producer is None:
            raise RuntimeError("producer not started")
        await self._producer.send_and_wait(topic, value, key=key, headers=headers)
