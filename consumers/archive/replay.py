"""Reading archive files back: ``uplink archive cat`` and ``uplink archive replay``.

A replay produces the archived records again, now, as new records (new offsets, current record
time). Workers reading the target topic judge them like any other record: a replayed push whose
original is still within the dedupe window (default 1 h of record time) on that topic is skipped
as a duplicate; an older one is processed again. To rebuild a downstream system, replay into a
topic (or for a consumer group) that does not hold the originals.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.read import SchemaResolutionError

from consumers.archive.exceptions import ArchiveReadError
from schemas import PushCodec, load_push_schema
from uplink.kafka import KafkaClients

log = logging.getLogger(__name__)


def archived_records(path: Path, reader: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """The records of one archive file, as records of ``reader`` (push.avsc by default): a file
    holds its writer's schema, and Avro's resolution reads an older or newer one's records as
    this version's. ArchiveReadError names the file if it is corrupt."""
    schema = load_push_schema() if reader is None else reader
    try:
        with path.open("rb") as stream:
            for record in fastavro.reader(stream, reader_schema=schema):
                yield _plain(record)  # type: ignore[arg-type]
    except (OSError, ValueError, EOFError, StopIteration, SchemaResolutionError) as exc:
        raise ArchiveReadError(path, f"not a readable Avro container file ({exc!r})") from exc


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
    paths: Iterable[Path], topic: str, clients: KafkaClients, codec: PushCodec
) -> tuple[int, list[ArchiveReadError]]:
    """Produce every archived record to ``topic`` (acks=all), as records of the codec's schema
    in its framing (Confluent, once its registration gave it an id); returns (count, unreadable
    files)."""
    producer = clients.producer(linger_ms=5)
    await producer.start()
    sent, failures = 0, []
    try:
        for path in paths:
            try:
                records = list(archived_records(path))  # all or nothing per file
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
