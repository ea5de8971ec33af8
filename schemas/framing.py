"""The framing of every record uplink puts on Kafka: Avro single-object encoding by default, or
the Confluent wire format once a schema registry gave the writer schema an id.

Avro spec, "Single object encoding": a 2-byte marker, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form, then the binary datum. Any Avro
library decodes such a record without a registry. The Confluent wire format: a zero byte, the
schema's 4-byte big-endian registry id, then the datum; what Kafka Connect, ksqlDB, Flink,
Spark's ``from_avro`` and the Kafka UIs read, through the registry.

Reading accepts both, from any writer schema the reader knows (schemas/writers.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, cast

from fastavro import parse_schema

from schemas.encoder import compile_encoder
from schemas.exceptions import CorruptRecord, UnknownSchema
from schemas.view import Shape, compile_view
from schemas.writers import (
    MAGIC,
    MARKER,
    SINGLE_OBJECT_SIZE,
    WriterSchemas,
    confluent_header,
    fingerprint_of,
    header_of,
    schema_id_of,
    without_logical_types,
)

HEADER_SIZE: Final = SINGLE_OBJECT_SIZE  # the single-object header

__all__ = [
    "HEADER_SIZE",
    "MARKER",
    "Framing",
    "RecordReader",
    "RecordWriter",
    "without_logical_types",
]


class RecordWriter:
    """Encodes records of one schema; build once, reuse.

    ``header`` is what ``encode`` writes: the single-object header, until ``frame_with(id)``
    (the schema's registry id, once it is registered) switches it to the Confluent one.
    """

    schema: dict[str, Any]
    fingerprint: bytes
    header: bytes

    def __init__(self, source: dict[str, Any]) -> None:
        self.schema = cast(dict[str, Any], parse_schema(source))
        self.fingerprint = fingerprint_of(source)
        self.header = MARKER + self.fingerprint
        self._source = source
        self._encode = compile_encoder(source, prefix=self.header)

    @property
    def schema_id(self) -> int | None:
        """The registry id ``encode`` writes, None while it writes single-object encoding."""
        return schema_id_of(self.header)

    def frame_with(self, schema_id: int) -> None:
        """Write the Confluent framing with ``schema_id`` from now on (set at start-up, once the
        schema is registered; records already encoded keep theirs)."""
        header = confluent_header(schema_id)
        self._encode = compile_encoder(self._source, prefix=header)
        self.header = header

    @property
    def text(self) -> str:
        """The schema's JSON text, as it is registered."""
        return json.dumps(self._source, separators=(",", ":"))

    def encode(self, record: dict[str, Any]) -> bytes:
        """The record (of this schema's types), framed with ``header``."""
        return self._encode(record)


class RecordReader:
    """Decodes records of any writer schema in ``writers`` into their reader schema."""

    def __init__(self, writers: WriterSchemas) -> None:
        # A timestamp-millis field reads back as the int of epoch millis it was written from,
        # not a datetime (the canonical form, so the wire, has no logicalType).
        self.writers = writers

    def viewer(self, shape: Shape) -> Callable[[bytes], dict[str, Any]]:
        """A reader of only ``shape``'s fields of a record (schemas/view.py), several times
        cheaper than ``decode`` for a few fields; it checks the framing, not the whole datum.
        A record of another writer schema than the reader's is decoded whole (resolved into
        the reader's schema), which reads the same."""
        writers = self.writers
        read = compile_view(writers.reader, shape)

        def view(data: bytes) -> dict[str, Any]:
            writer = writers.get(data)
            if writer is None:
                raise _unknown(data)
            if writer.same:
                return read(data, len(writer.header))
            return cast(dict[str, Any], writer.read(data, len(writer.header)))

        return view

    def decode(self, data: bytes | memoryview) -> dict[str, Any]:
        """Inverse of encode, for a record of any writer schema known; raises UnknownSchema or
        CorruptRecord."""
        writer = self.writers.get(data)
        if writer is None:
            raise _unknown(data)
        record = writer.read(data, len(writer.header))
        if not isinstance(record, dict):
            raise CorruptRecord("datum is not a record")
        return record


class Framing(RecordWriter, RecordReader):
    """The writer and the reader of one schema's records (the media, status and Meta event
    records); ``known``: other writer schemas its records may carry."""

    def __init__(self, source: dict[str, Any], known: list[dict[str, Any]] | None = None) -> None:
        RecordWriter.__init__(self, source)
        RecordReader.__init__(self, WriterSchemas(source, known or ()))

    def frame_with(self, schema_id: int) -> None:
        """As RecordWriter's, and records framed with ``schema_id`` read back from now on."""
        self.writers.add(schema_id, self.text)
        super().frame_with(schema_id)


def _unknown(data: bytes | memoryview) -> UnknownSchema:
    if data[:2] == MARKER:
        found = bytes(data[2:SINGLE_OBJECT_SIZE])
        return UnknownSchema(f"unknown writer schema, fingerprint {found.hex()}", found)
    schema_id = schema_id_of(data)
    if data[:1] == MAGIC and schema_id is not None:
        return UnknownSchema(f"unknown writer schema, registry id {schema_id}", schema_id=schema_id)
    return UnknownSchema(
        f"neither single-object encoded (C3 01) nor Confluent framed (00): {header_of(data).hex()}"
    )
