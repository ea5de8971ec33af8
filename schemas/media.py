"""The media event (``media.avsc``), in the same single-object framing as push records."""

from __future__ import annotations

import io
import json
from importlib import resources
from typing import Any, cast

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint as schema_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.codec import HEADER_SIZE, MARKER, _without_logical_types
from schemas.encoder import compile_encoder
from schemas.exceptions import CorruptRecord, UnknownSchema


def load_media_schema() -> dict[str, Any]:
    """The shipped media.avsc as a plain (unparsed) JSON schema."""
    text = resources.files("schemas").joinpath("media.avsc").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


class MediaCodec:
    """Frames media events for Kafka; build once, reuse. ``fetchedAt`` is epoch millis."""

    def __init__(self) -> None:
        source = load_media_schema()
        self.schema = cast(dict[str, Any], parse_schema(source))
        canonical = to_parsing_canonical_form(self.schema)
        self.fingerprint = bytes.fromhex(schema_fingerprint(canonical, "CRC-64-AVRO"))
        self.header = MARKER + self.fingerprint
        self._encode = compile_encoder(source, prefix=self.header)
        # Same wire format, but fetchedAt reads back as the int it was written as.
        self._datum_schema = parse_schema(_without_logical_types(source))

    def encode(self, event: dict[str, Any]) -> bytes:
        return self._encode(event)

    def decode(self, data: bytes) -> dict[str, Any]:
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
        if not isinstance(record, dict):
            raise CorruptRecord("datum is not a record")
        return record
