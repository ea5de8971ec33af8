"""Reading a topic by time: each partition from the broker's offsets-for-times of a start time up
to its end as of the start of the read, never from the topic's beginning unless asked.

``Scan`` counts what a read cost (records and bytes fetched, per partition where it started and
ended), for the operator's "how far it read" line.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import time
from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from uplink.exceptions import ConfigError

if TYPE_CHECKING:
    from uplink.operate.readers import Readers

Record: TypeAlias = ConsumerRecord[bytes, bytes]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
# A fetch that brings nothing for this long while a partition is short of its end: the rest
# is not readable (aborted transactions' records at the end): the read stops there.
IDLE_SECONDS = 5.0


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1w`` → seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(option, f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_time(text: str, option: str, now: float | None = None) -> int:
    """A time as epoch milliseconds: a duration ago (``2h``), an ISO 8601 time (UTC unless it
    says otherwise), or epoch milliseconds."""
    now = time.time() if now is None else now
    if _DURATION.match(text):
        return int((now - parse_duration(text, option)) * 1000)
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            option, f"{text!r} is not a time (2h, 2026-12-07T09:00, or epoch ms)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def iso(ms: int) -> str:
    """Epoch ms as an ISO 8601 UTC time, to the millisecond."""
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Scan:
    """What one or more reads fetched."""

    records: int = 0
    bytes: int = 0
    # (topic, partition) → (first offset read, end offset)
    ranges: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.records += 1
        self.bytes += len(record.value or b"") + len(record.key or b"")

    def describe(self) -> str:
        topics = sorted({topic for topic, _ in self.ranges})
        spans = sum(end - start for start, end in self.ranges.values())
        text = (
            f"read {self.records} records ({self.bytes} bytes) of {spans} offsets "
            f"in {len(self.ranges)} partitions of {', '.join(topics) or 'no topic'}"
        )
        if self.incomplete:
            text += f"; stopped short in {', '.join(self.incomplete)}"
        return text


class TopicReader:
    """Reads with one started consumer, without a group (nothing committed), lent by
    ``Readers`` (uplink/operate/readers.py) for one request or one command."""

    def __init__(self, consumer: AIOKafkaConsumer, readers: Readers, scan: Scan) -> None:
        self.scan = scan
        self._consumer = consumer
        self._readers = readers
        self._topics: set[str] | None = None

    @property
    def consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def topics(self) -> set[str]:
        """The cluster's topics, asked once per reader."""
        if self._topics is None:
            self._topics = await self._readers.topics()
        return self._topics

    async def partitions(self, topic: str) -> list[int]:
        return await self._readers.partitions(topic)

    async def committed(
        self, groups: Mapping[str, str], tp: TopicPartition
    ) -> dict[str, int | None]:
        """Each worker's group's committed position in ``tp`` (None: nothing committed)."""
        return await self._readers.committed(groups, tp)

    async def read(
        self,
        topic: str,
        since_ms: int | None,
        until_ms: int | None = None,
        partitions: Iterable[int] | None = None,
    ) -> AsyncGenerator[Record, None]:
        """The records of ``topic`` from ``since_ms`` (None: from the beginning) to the end of
        each partition as of now, stopping a partition at its first record after ``until_ms``;
        partition by partition interleaved as fetched (in order within each)."""
        async for record in self.read_all({topic: partitions}, since_ms, until_ms):
            yield record

    async def read_all(
        self,
        topics: Mapping[str, Iterable[int] | None],
        since_ms: int | None,
        until_ms: int | None = None,
    ) -> AsyncGenerator[Record, None]:
        """``read`` of several topics at once (topic → its partitions, None: all of them):
        their offsets asked in one round, fetched together; a record says its topic."""
        consumer = self._consumer
        tps = [
            TopicPartition(topic, p)
            for topic, partitions in topics.items()
            for p in (partitions if partitions is not None else await self.partitions(topic))
        ]
        if not tps:
            return
        # Assigned first, paused: the consumer's metadata follows its assignment, and the
        # offsets below need the partitions' leaders; nothing is fetched before the seeks.
        consumer.assign(tps)
        consumer.pause(*tps)
        if since_ms is None:
            ends, starts = await asyncio.gather(
                consumer.end_offsets(tps), consumer.beginning_offsets(tps)
            )
        else:
            ends, found = await asyncio.gather(
                consumer.end_offsets(tps), consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
            )
            starts = {tp: ends[tp] if hit is None else hit.offset for tp, hit in found.items()}
        todo: set[TopicPartition] = set()
        for tp in tps:
            self.scan.ranges[(tp.topic, tp.partition)] = (starts[tp], ends[tp])
            if starts[tp] < ends[tp]:
                todo.add(tp)
                consumer.seek(tp, starts[tp])
        if not todo:
            return
        consumer.resume(*todo)
        idle_since = time.monotonic()
        while todo:
            # Records are made as they are asked for: a read that stops early makes few.
            batches = await consumer.getmany(*todo, timeout_ms=500, max_records=500)
            if batches:
                idle_since = time.monotonic()
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    if until_ms is not None and record.timestamp > until_ms:
                        self._done(tp, todo, ends, record.offset)
                        break
                    self.scan.add(record)
                    yield record
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    self._done(tp, todo, ends, ends[tp])
            if todo and time.monotonic() - idle_since > IDLE_SECONDS:
                self.scan.incomplete.extend(f"{tp.topic}[{tp.partition}]" for tp in todo)
                break

    def _done(
        self,
        tp: TopicPartition,
        todo: set[TopicPartition],
        ends: dict[TopicPartition, int],
        at: int,
    ) -> None:
        if tp in todo:
            todo.discard(tp)
            self._consumer.pause(tp)
            start, _ = self.scan.ranges[(tp.topic, tp.partition)]
            self.scan.ranges[(tp.topic, tp.partition)] = (start, at)

    async def one(self, topic: str, partition: int, offset: int) -> Record | None:
        """The record at ``offset`` (None if there is none: out of range, or a marker)."""
        consumer = self._consumer
        tp = TopicPartition(topic, partition)
        if partition not in await self.partitions(topic):
            return None
        consumer.assign([tp])
        consumer.pause(tp)  # nothing fetched before the seek
        ends, begins = await asyncio.gather(
            consumer.end_offsets([tp]), consumer.beginning_offsets([tp])
        )
        if not begins[tp] <= offset < ends[tp]:
            return None
        consumer.seek(tp, offset)
        consumer.resume(tp)
        self.scan.ranges[(topic, partition)] = (offset, offset + 1)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < IDLE_SECONDS:
            batches = await consumer.getmany(tp, timeout_ms=500, max_records=1)
            for record in batches.get(tp, []):
                self.scan.add(record)
                return record if record.offset == offset else None
            if await consumer.position(tp) > offset:
                return None
        return None
