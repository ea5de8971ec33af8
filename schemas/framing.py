"""Avro single-object encoding, shared by every record uplink puts on Kafka.

Avro spec, "Single object encoding": a 2-byte marker, the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form, then the binary datum. Any Avro
library decodes such a record without a registry.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, Final, cast

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint as schema_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.encoder import compile_encoder
from schemas.exceptions import CorruptRecord, UnknownSchema
from schemas.view import Shape, compile_view

MARKER: Final = b"\xc3\x01"
HEADER_SIZE: Final = 10


def without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [without_logical_types(item) for item in schema]
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


class Framing:
    """Encode and decode records of one schema, single-object framed; build once, reuse."""

    schema: dict[str, Any]
    fingerprint: bytes
    header: bytes

    def __init__(self, source: dict[str, Any]) -> None:
        self.schema = cast(dict[str, Any], parse_schema(source))
        canonical = to_parsing_canonical_form(self.schema)
        # fastavro gives the hex of the fingerprint's bytes already in little-endian order.
        self.fingerprint = bytes.fromhex(schema_fingerprint(canonical, "CRC-64-AVRO"))
        self.header = MARKER + self.fingerprint
        self._encode = compile_encoder(source, prefix=self.header)
        # Same wire format (the canonical form drops logicalType), but a timestamp-millis field
        # reads back as the int of epoch millis it was written from, not a datetime.
        self._datum_schema = parse_schema(without_logical_types(source))
        self._source = source

    def encode(self, record: dict[str, Any]) -> bytes:
        """The record (of this schema's types) single-object encoded."""
        return self._encode(record)

    def viewer(self, shape: Shape) -> Callable[[bytes], dict[str, Any]]:
        """A reader of only ``shape``'s fields of a record (schemas/view.py), several times
        cheaper than ``decode`` for a few fields; it checks the framing, not the whole datum."""
        read = compile_view(self._source, shape)
        header = self.header

        def view(data: bytes) -> dict[str, Any]:
            if not data.startswith(header):
                raise UnknownSchema(f"not a record of this schema (header {data[:10].hex()})")
            return read(data, HEADER_SIZE)

        return view

    def decode(self, data: bytes | memoryview) -> dict[str, Any]:
        """Inverse of encode; raises UnknownSchema or CorruptRecord."""
        if data[:2] != MARKER:
            raise UnknownSchema("not Avro single-object encoded (no C3 01 marker)")
        found = bytes(data[2:HEADER_SIZE])
        if found != self.fingerprint:
            raise UnknownSchema(f"unknown writer schema, fingerprint {found.hex()}", found)
        source = io.BytesIO(data)
        source.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(source, self._datum_schema, None)
        except Exception as error:  # untrusted bytes: any decoder failure means a corrupt datum
            raise CorruptRecord(f"undecodable datum: {error!r}") from error
        if source.tell() != len(data):
            raise CorruptRecord(f"{len(data) - source.tell()} trailing bytes after the datum")
        if not isinstance(record, dict):
            raise CorruptRecord("datum is not a record")
        return record
