"""Consumers kept started for a process's reads: ``Readers`` lends each read (a console's
request, a command's run) a ``TopicReader`` over one of them, and takes it back paused.

Starting and stopping a consumer costs more than most reads a page makes (connections, the
cluster's metadata, and aiokafka's fetch routine on the way down, ``stop_consumer``), so a
console starts ``size`` of them with its app and stops them with it; a command starts one. Two
requests never share a consumer (assign and seek are the consumer's state): a request waits for
one when all are lent. One admin client, kept as long, asks for partitions (remembered for a
while: they change rarely and only grow) and the groups' committed positions.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from uplink.exceptions import KafkaUnavailable
from uplink.kafka import KafkaClients, stop_consumer
from uplink.operate.window import Scan, TopicReader
from uplink.resources import Resource

FETCH_BYTES = 4 << 20  # a partition's share of one fetch


class Readers(Resource):
    def __init__(self, clients: KafkaClients, size: int = 1, partitions_ttl: float = 60.0) -> None:
        self.clients = clients
        self._size = size
        self._partitions_ttl = partitions_ttl
        self._admin: AIOKafkaAdminClient | None = None
        self._consumers: list[AIOKafkaConsumer] = []
        self._idle: asyncio.Queue[AIOKafkaConsumer] = asyncio.Queue()
        self._partitions: dict[str, tuple[float, list[int]]] = {}

    async def start(self) -> None:
        if self._admin is not None:
            return
        admin = self.clients.admin()
        try:
            await self.clients.start(admin)
            for _ in range(self._size):
                consumer = self.clients.consumer(
                    group_id=None,
                    enable_auto_commit=False,
                    auto_offset_reset="earliest",
                    # A window is read in few round trips, not in 1 MiB steps.
                    max_partition_fetch_bytes=FETCH_BYTES,
                    fetch_max_bytes=4 * FETCH_BYTES,
                )
                self._consumers.append(consumer)
                await self.clients.start(consumer)
                self._idle.put_nowait(consumer)
        except BaseException:
            await self._close(admin)
            raise
        self._admin = admin

    async def stop(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await self._close(admin)

    async def _close(self, admin: AIOKafkaAdminClient) -> None:
        consumers, self._consumers = self._consumers, []
        self._idle = asyncio.Queue()
        try:
            await asyncio.gather(*(stop_consumer(c) for c in consumers))
        finally:
            await admin.close()

    @contextlib.asynccontextmanager
    async def reader(self, scan: Scan | None = None) -> AsyncIterator[TopicReader]:
        """A reader of one consumer, until the block ends; its reads counted in ``scan``."""
        if self._admin is None:
            raise RuntimeError("Readers: start() first")
        consumer = await self._idle.get()
        try:
            yield TopicReader(consumer, self, scan if scan is not None else Scan())
        finally:
            # Paused, not unassigned: dropping the assignment would refresh the whole
            # cluster's metadata, and the next read assigns its own partitions anyway.
            consumer.pause(*consumer.assignment())
            self._idle.put_nowait(consumer)

    @property
    def admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("Readers: start() first")
        return self._admin

    async def topics(self) -> set[str]:
        """The cluster's topics, asked now (a DLQ appears with its first dead letter)."""
        return set(await self.admin.list_topics())

    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions; a topic the cluster does not have is an error naming it."""
        known = self._partitions.get(topic)
        if known is not None and time.monotonic() - known[0] < self._partitions_ttl:
            return known[1]
        [described] = await self.admin.describe_topics([topic])
        partitions = sorted(p["partition"] for p in described.get("partitions") or ())
        if described.get("error_code") or not partitions:
            raise KafkaUnavailable(
                f"topic {topic} does not exist (or is not visible to this client)"
            )
        self._partitions[topic] = (time.monotonic(), partitions)
        return partitions

    async def committed(
        self, groups: Mapping[str, str], tp: TopicPartition
    ) -> dict[str, int | None]:
        """For each worker of ``groups`` (worker → group), its group's committed position in
        ``tp`` (None: nothing committed), asked of the groups' coordinators at once."""

        async def one(group: str) -> int | None:
            found = (await _group_offsets(self.admin, group, tp)).get(tp)
            return found.offset if found is not None and found.offset >= 0 else None

        positions = await asyncio.gather(*(one(group) for group in groups.values()))
        return dict(zip(groups, positions, strict=True))


async def _group_offsets(
    admin: AIOKafkaAdminClient, group: str, tp: TopicPartition, attempts: int = 20
) -> dict[TopicPartition, OffsetAndMetadata]:
    """The group's committed offsets; a cluster where no group ever committed has no offsets
    topic yet, and its coordinator answers "not available" while it creates one."""
    for attempt in range(attempts):
        try:
            offsets: dict[
                TopicPartition, OffsetAndMetadata
            ] = await admin.list_consumer_group_offsets(group, partitions=[tp])
            return offsets
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    return {}
