"""The path of one push: where it is in the messages topic, and what each group made of it.

With the conversation's phones, only the conversation's partition is read (the key picks it, as
the ingress's producer did); otherwise every partition over the window. For each group: processed
(its committed position is past the record), pending (how many records before it are still to
be processed), or dead-lettered (with the reason, found in the worker's DLQ after the record's
time). Then what the media worker stored for it (``uplink.media.v1``), where the router sent it
(its output and delay topics: their records carry ``uplink-source``), and, for a message of
Meta's webhook, its statuses (``uplink.statuses.v1``: keyed by the conversation as the pushes
are, so the phones pick one partition there too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from schemas import MediaCodec, PushCodec, SchemaError
from schemas.meta import StatusCodec
from uplink.kafka import java_partitioner
from uplink.operate.deadletters import WORKERS
from uplink.operate.readers import Readers
from uplink.operate.records import last_header, message_id_of
from uplink.operate.window import Record, Scan, TopicReader, iso
from uplink.settings import Topics


def conversation_key(business: str, sender: str) -> bytes:
    """The messages topic's key (PushCodec.key): ``businessPhone:from.phone``."""
    return f"{business}:{sender}".encode()


def partition_of(key: bytes, partitions: Sequence[int]) -> int:
    """The partition uplink's producers put ``key`` in."""
    ordered = sorted(partitions)
    return java_partitioner(key, ordered, ordered)


@dataclass(frozen=True)
class GroupState:
    group: str
    worker: str
    state: str  # processed, pending, dead-lettered, not started
    detail: str = ""

    def row(self) -> dict[str, Any]:
        return {"group": self.group, "state": self.state, "detail": self.detail}


@dataclass
class Sighting:
    """One record of the push (a retried push has several) and what became of it."""

    record: Record
    groups: list[GroupState] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        record = self.record
        return {
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "time": iso(record.timestamp),
            "groups": [g.row() for g in self.groups],
        }


@dataclass
class Trace:
    message_id: str
    sightings: list[Sighting] = field(default_factory=list)
    media: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """The push is in the window, or (a message the business sent) a status of it."""
        return bool(self.sightings or self.statuses)

    def row(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "found": [s.row() for s in self.sightings],
            "media": self.media,
            "outputs": self.outputs,
            "statuses": self.statuses,
        }


class Tracer:
    def __init__(
        self,
        readers: Readers,
        topics: Topics,
        codec: PushCodec,
        groups: dict[str, str] | None = None,
        scan: Scan | None = None,
    ) -> None:
        self._readers = readers
        self._topics = topics
        self._codec = codec
        # worker → its consumer group
        self._groups = groups if groups is not None else {w: f"uplink-{w}" for w in WORKERS}
        self.scan = scan if scan is not None else Scan()

    @property
    def groups(self) -> dict[str, str]:
        """worker → its consumer group"""
        return self._groups

    async def trace(
        self,
        message_id: str,
        since_ms: int,
        until_ms: int | None,
        key: bytes | None = None,
        output_topics: Sequence[str] = (),
    ) -> Trace:
        found = Trace(message_id)
        async with self._readers.reader(self.scan) as reader:
            topic = self._topics.messages
            partitions = await reader.partitions(topic)
            chosen = [partition_of(key, partitions)] if key is not None else partitions
            async for record in reader.read(topic, since_ms, until_ms, chosen):
                if message_id_of(self._codec, record.value) == message_id:
                    found.sightings.append(Sighting(record))
            found.statuses = await self._statuses(reader, message_id, since_ms, until_ms, key)
            if not found.sightings:
                return found
            first = min(s.record.timestamp for s in found.sightings)
            # What the workers wrote of a push is keyed as the push: its partitions only.
            keys = {s.record.key for s in found.sightings if s.record.key is not None}
            letters = await self._dead_letters(reader, found, first, keys)
            for sighting in found.sightings:
                record = sighting.record
                tp = TopicPartition(record.topic, record.partition)
                committed = await reader.committed(self._groups, tp)
                for worker, group in self._groups.items():
                    sighting.groups.append(
                        _state(worker, group, record, committed[worker], letters)
                    )
            found.media = await self._media(reader, message_id, first, keys)
            found.outputs = await self._outputs(reader, found, first, output_topics, keys)
        return found

    async def _dead_letters(
        self, reader: TopicReader, found: Trace, since_ms: int, keys: set[bytes]
    ) -> dict[tuple[str, int, int], str]:
        """(worker, partition, offset) of a sighting → the reason it was dead-lettered."""
        wanted = {(s.record.partition, s.record.offset) for s in found.sightings}
        topics = await reader.topics()
        letters: dict[tuple[str, int, int], str] = {}
        for worker in self._groups:
            dlq = self._topics.dlq(worker)
            if dlq not in topics:
                continue
            chosen = await partitions_of_keys(reader, dlq, keys)
            async for record in reader.read(dlq, since_ms, partitions=chosen):
                headers = record.headers
                if last_header(headers, "uplink-dlq-topic") != self._topics.messages:
                    # Dead-lettered from a delay or re-drive topic: matched by messageId.
                    if message_id_of(self._codec, record.value) != found.message_id:
                        continue
                    for partition, offset in wanted:
                        letters[(worker, partition, offset)] = (
                            last_header(headers, "uplink-dlq-reason") or ""
                        )
                    continue
                partition = int(last_header(headers, "uplink-dlq-partition") or -1)
                offset = int(last_header(headers, "uplink-dlq-offset") or -1)
                if (partition, offset) in wanted:
                    letters[(worker, partition, offset)] = (
                        last_header(headers, "uplink-dlq-reason") or ""
                    )
        return letters

    async def _media(
        self, reader: TopicReader, message_id: str, since_ms: int, keys: set[bytes]
    ) -> list[dict[str, Any]]:
        found = await stored_media(reader, self._topics.media, since_ms, {message_id}, keys)
        return [
            {k: v for k, v in event.items() if k not in ("messageId", "mimeType")}
            for event in found.get(message_id, [])
        ]

    async def _statuses(
        self,
        reader: TopicReader,
        message_id: str,
        since_ms: int,
        until_ms: int | None,
        key: bytes | None,
    ) -> list[dict[str, Any]]:
        """The statuses of ``message_id`` (a wamid) in the window, in the order they arrived."""
        topic = self._topics.statuses
        if topic not in await reader.topics():
            return []
        partitions = await reader.partitions(topic)
        chosen = [partition_of(key, partitions)] if key is not None else partitions
        codec = StatusCodec()
        statuses: list[dict[str, Any]] = []
        async for record in reader.read(topic, since_ms, until_ms, chosen):
            try:
                status = codec.decode(record.value or b"")
            except SchemaError:
                continue
            if status.get("id") != message_id:
                continue
            errors = status.get("errors") or []
            statuses.append(
                {
                    "status": status.get("status"),
                    "time": iso(int(status["timestamp"]) * 1000)
                    if status.get("timestamp") is not None
                    else None,
                    "recipient": status.get("recipient_id"),
                    "errors": [e.get("title") or e.get("message") for e in errors],
                    "at": f"{record.topic}/{record.partition}@{record.offset}",
                }
            )
        return statuses

    async def _outputs(
        self,
        reader: TopicReader,
        found: Trace,
        since_ms: int,
        output_topics: Sequence[str],
        keys: set[bytes],
    ) -> list[dict[str, Any]]:
        sources = {
            f"{s.record.topic}/{s.record.partition}@{s.record.offset}" for s in found.sightings
        }
        existing = await reader.topics()
        outputs: list[dict[str, Any]] = []
        for topic in output_topics:
            if topic not in existing:
                continue
            chosen = await partitions_of_keys(reader, topic, keys)
            async for record in reader.read(topic, since_ms, partitions=chosen):
                if last_header(record.headers, "uplink-source") in sources:
                    outputs.append(
                        {
                            "topic": record.topic,
                            "partition": record.partition,
                            "offset": record.offset,
                            "rule": last_header(record.headers, "uplink-rule"),
                            "endpoint": last_header(record.headers, "uplink-endpoint"),
                            # A parked delivery's late answer (consumers/router/settlements.py)
                            "settled": last_header(record.headers, "uplink-settled"),
                        }
                    )
        return outputs


def _state(
    worker: str,
    group: str,
    record: Record,
    committed: int | None,
    letters: dict[tuple[str, int, int], str],
) -> GroupState:
    reason = letters.get((worker, record.partition, record.offset))
    if reason is not None:
        return GroupState(group, worker, "dead-lettered", reason)
    if committed is None:
        return GroupState(group, worker, "pending", "the group has committed nothing here")
    if committed > record.offset:
        return GroupState(group, worker, "processed", f"committed at {committed}")
    return GroupState(
        group, worker, "pending", f"{record.offset - committed} records before it to go"
    )


async def partitions_of_keys(
    reader: TopicReader, topic: str, keys: set[bytes] | None
) -> list[int] | None:
    """The partitions of ``topic`` that records of ``keys`` go to (None: every partition, as
    for records without a key)."""
    if not keys:
        return None
    partitions = await reader.partitions(topic)
    return sorted({partition_of(key, partitions) for key in keys})


async def stored_media(
    reader: TopicReader,
    topic: str,
    since_ms: int,
    message_ids: set[str] | None = None,
    keys: set[bytes] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """What the media worker stored since ``since_ms`` (its events in ``topic``, keyed as the
    pushes: with ``keys``, their partitions only), by messageId: of ``message_ids`` only, or
    of every push."""
    if topic not in await reader.topics():
        return {}
    codec = MediaCodec()
    stored: dict[str, list[dict[str, Any]]] = {}
    chosen = await partitions_of_keys(reader, topic, keys)
    async for record in reader.read(topic, since_ms, partitions=chosen):
        try:
            event = codec.decode(record.value or b"")
        except SchemaError:
            continue
        message_id = event.get("messageId")
        if message_ids is not None and message_id not in message_ids:
            continue
        stored.setdefault(str(message_id), []).append(
            {
                "messageId": message_id,
                "uri": event["uri"],
                "sha256": event["sha256"],
                "size": event["size"],
                "type": event["type"],
                "mimeType": event.get("mimeType"),
                "at": f"{record.topic}/{record.partition}@{record.offset}",
            }
        )
    return stored
