"""Reading archive files back: ``uplink archive cat`` and ``uplink archive replay``.

A replay produces the archived records again, now, as new records (new offsets, current record
time). Workers reading the target topic judge them like any other record: a replayed push whose
original is still within the dedupe window (default 1 h of record time) on that topic is skipped
as a duplicate; an older one is processed again. To rebuild a downstream system, replay into a
topic (or for a consumer group) that does not hold the originals.

What is read: archive files named on the command line, every ``.avro`` file under a directory,
or every object under ``s3://bucket/prefix``; by a range of event hours (``dt=…/hour=…`` in the
key) if one is given.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import logging
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.read import SchemaResolutionError

from consumers.archive.exceptions import ArchiveReadError
from schemas import PushCodec, load_push_schema
from uplink.exceptions import ConfigError
from uplink.kafka import KafkaClients
from uplink.s3.bucket import Bucket

log = logging.getLogger(__name__)

_HOUR_KEY = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


@dataclass(frozen=True)
class Hours:
    """Event hours from ``first`` to ``last``, both included (None: open)."""

    first: datetime.datetime | None = None
    last: datetime.datetime | None = None

    def holds(self, key: str) -> bool:
        """Whether the file of ``key`` (its ``dt=…/hour=…``) is in range; a key without them
        only in an open range."""
        if self.first is None and self.last is None:
            return True
        found = _HOUR_KEY.search(key)
        if found is None:
            return False
        hour = datetime.datetime.fromisoformat(f"{found[1]}T{found[2]}:00+00:00")
        return (self.first is None or self.first <= hour) and (
            self.last is None or hour <= self.last
        )


def hour(text: str, setting: str, *, last: bool = False) -> datetime.datetime:
    """``YYYY-MM-DDTHH`` (an hour) or ``YYYY-MM-DD`` (its first hour, or its last one)."""
    try:
        if "T" in text:
            return datetime.datetime.strptime(text, "%Y-%m-%dT%H").replace(tzinfo=datetime.UTC)
        day = datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.UTC)
    except ValueError:
        raise ConfigError(setting, f"{text!r} is not YYYY-MM-DD or YYYY-MM-DDTHH") from None
    return day.replace(hour=23) if last else day


Source = Path | Bucket


async def archive_files(
    sources: Sequence[Source], hours: Hours = Hours()
) -> AsyncIterator[tuple[str, bytes | ArchiveReadError]]:
    """(name, bytes) of each archive file of ``sources``, in key order per source: a file, the
    ``.avro`` files under a directory, the objects under a bucket's prefix (started buckets)."""
    for source in sources:
        if isinstance(source, Bucket):
            location = source.location
            prefix = f"{location.prefix}/" if location.prefix else ""
            for item in await source.listed(prefix):
                if item.key.endswith(".avro") and hours.holds(item.key):
                    yield f"s3://{location.bucket}/{item.key}", await source.get(item.key)
            continue
        paths = sorted(source.rglob("*.avro")) if source.is_dir() else [source]
        for path in paths:
            if source.is_dir() and not hours.holds(path.relative_to(source).as_posix()):
                continue
            try:
                yield str(path), await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                yield str(path), ArchiveReadError(str(path), f"cannot be read ({exc})")


@functools.cache
def _current_schema() -> Any:
    """push.avsc, read and parsed once: every archive file is read into it."""
    return fastavro.parse_schema(load_push_schema())


def records_of(
    name: str, data: bytes, reader: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The records of one archive file, all or none, as records of ``reader`` (push.avsc by
    default): a file holds its writer's schema, and Avro's resolution reads an older or newer
    one's records as this version's. ArchiveReadError names a corrupt one."""
    schema = _current_schema() if reader is None else reader
    try:
        return [
            _plain(record)  # type: ignore[arg-type]
            for record in fastavro.reader(io.BytesIO(data), reader_schema=schema)
        ]
    except (ValueError, EOFError, StopIteration, SchemaResolutionError) as exc:
        raise ArchiveReadError(name, f"not a readable Avro container file ({exc!r})") from exc


def archived_records(path: Path, reader: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The records of one archive file on disk, as records of ``reader`` (see records_of)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArchiveReadError(str(path), f"cannot be read ({exc})") from exc
    yield from records_of(str(path), data, reader)


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    # The file's schema marks receivedAt as timestamp-millis; the topic's records carry the int.
    received = record.get("receivedAt")
    if isinstance(received, datetime.datetime):
        record["receivedAt"] = int(received.timestamp() * 1000)
    return record


def json_line(record: dict[str, Any]) -> bytes:
    """The typed view with ``raw`` as the original JSON (or its text, if it is not JSON)."""
    raw = record["raw"]
    try:
        original: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        original = raw.decode("utf-8", "replace")
    return orjson.dumps({**record, "raw": original})


async def replay(
    files: AsyncIterator[tuple[str, bytes | ArchiveReadError]],
    topic: str,
    clients: KafkaClients,
    codec: PushCodec,
) -> tuple[int, list[ArchiveReadError]]:
    """Produce every archived record to ``topic`` (acks=all), as records of the codec's schema
    in its framing (Confluent, once its registration gave it an id); returns (count, unreadable
    files)."""
    producer = clients.producer(linger_ms=5)
    await clients.start(producer)
    sent, failures = 0, []
    try:
        async for path, data in files:
            try:
                if isinstance(data, ArchiveReadError):
                    raise data
                records = records_of(path, data)  # all or nothing per file
            except ArchiveReadError as error:
                failures.append(error)
                continue
            deliveries = [
                await producer.send(topic, codec.encode(record), key=codec.key(record))
                for record in records
            ]
            for delivery in deliveries:
                await delivery
            sent += len(deliveries)
            log.info("replayed %d records of %s to %s", len(deliveries), path, topic)
    finally:
        await producer.stop()
    return sent, failures
