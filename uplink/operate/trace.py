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

import asyncio
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
        topics = self._topics
        async with self._readers.reader(self.scan) as reader:
            existing = await reader.topics()
            # The window of the messages and, for a message the business sent, of its
            # statuses (keyed by the conversation too): read in one go.
            conversation = {key} if key is not None else None
            first_read: dict[str, list[int] | None] = {
                topics.messages: await partitions_of_keys(reader, topics.messages, conversation)
            }
            if topics.statuses in existing:
                first_read[topics.statuses] = await partitions_of_keys(
                    reader, topics.statuses, conversation
                )
            status_codec = StatusCodec()
            async for record in reader.read_all(first_read, since_ms, until_ms):
                if record.topic == topics.messages:
                    if message_id_of(self._codec, record.value) == message_id:
                        found.sightings.append(Sighting(record))
                else:
                    status = _status(status_codec, record, message_id)
                    if status is not None:
                        found.statuses.append(status)
            if not found.sightings:
                return found
            first = min(s.record.timestamp for s in found.sightings)
            # What the workers wrote of the push is keyed as the push: its partitions only,
            # read in one go while the groups' positions are asked.
            keys = {s.record.key for s in found.sightings if s.record.key is not None}
            dlqs = {topics.dlq(w): w for w in self._groups if topics.dlq(w) in existing}
            outputs = [t for t in dict.fromkeys(output_topics) if t in existing]
            later: dict[str, list[int] | None] = {}
            for topic in [*dlqs, topics.media, *outputs]:
                if topic in existing:
                    later[topic] = await partitions_of_keys(reader, topic, keys)
            positions = asyncio.gather(
                *(
                    reader.committed(
                        self._groups, TopicPartition(s.record.topic, s.record.partition)
                    )
                    for s in found.sightings
                )
            )
            letters: dict[tuple[str, int, int], str] = {}
            media_codec = MediaCodec()
            sources = {
                f"{s.record.topic}/{s.record.partition}@{s.record.offset}" for s in found.sightings
            }
            try:
                async for record in reader.read_all(later, first):
                    if record.topic in dlqs:
                        letters.update(self._letter(dlqs[record.topic], record, found))
                    elif record.topic == topics.media:
                        event = media_event(media_codec, record)
                        if event is not None and event["messageId"] == message_id:
                            found.media.append(
                                {k: v for k, v in event.items() if k not in _NOT_SHOWN}
                            )
                    elif last_header(record.headers, "uplink-source") in sources:
                        found.outputs.append(_output(record))
            finally:
                committed = await positions
            for sighting, at in zip(found.sightings, committed, strict=True):
                for worker, group in self._groups.items():
                    sighting.groups.append(
                        _state(worker, group, sighting.record, at[worker], letters)
                    )
        return found

    def _letter(self, worker: str, record: Record, found: Trace) -> dict[tuple[str, int, int], str]:
        """(worker, partition, offset) of a sighting → the reason this dead letter gives."""
        headers = record.headers
        reason = last_header(headers, "uplink-dlq-reason") or ""
        wanted = {(s.record.partition, s.record.offset) for s in found.sightings}
        if last_header(headers, "uplink-dlq-topic") != self._topics.messages:
            # Dead-lettered from a delay or re-drive topic: matched by messageId.
            if message_id_of(self._codec, record.value) != found.message_id:
                return {}
            return {(worker, partition, offset): reason for partition, offset in wanted}
        partition = int(last_header(headers, "uplink-dlq-partition") or -1)
        offset = int(last_header(headers, "uplink-dlq-offset") or -1)
        return {(worker, partition, offset): reason} if (partition, offset) in wanted else {}


_NOT_SHOWN = ("messageId", "mimeType")


def _status(codec: StatusCodec, record: Record, message_id: str) -> dict[str, Any] | None:
    """The status of ``message_id`` (a wamid) that ``record`` carries, if it does."""
    try:
        status = codec.decode(record.value or b"")
    except SchemaError:
        return None
    if status.get("id") != message_id:
        return None
    errors = status.get("errors") or []
    return {
        "status": status.get("status"),
        "time": iso(int(status["timestamp"]) * 1000)
        if status.get("timestamp") is not None
        else None,
        "recipient": status.get("recipient_id"),
        "errors": [e.get("title") or e.get("message") for e in errors],
        "at": f"{record.topic}/{record.partition}@{record.offset}",
    }


def _output(record: Record) -> dict[str, Any]:
    """A copy the router wrote of the push (an output or delay topic's record)."""
    return {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "rule": last_header(record.headers, "uplink-rule"),
        "endpoint": last_header(record.headers, "uplink-endpoint"),
        # A parked delivery's late answer (consumers/router/settlements.py)
        "settled": last_header(record.headers, "uplink-settled"),
    }


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


def media_event(codec: MediaCodec, record: Record) -> dict[str, Any] | None:
    """What the media worker stored, as its event in ``record`` says (None: not an event)."""
    try:
        event = codec.decode(record.value or b"")
    except SchemaError:
        return None
    return {
        "messageId": event.get("messageId"),
        "uri": event["uri"],
        "sha256": event["sha256"],
        "size": event["size"],
        "type": event["type"],
        "mimeType": event.get("mimeType"),
        "at": f"{record.topic}/{record.partition}@{record.offset}",
    }
