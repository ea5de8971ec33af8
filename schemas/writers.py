"""The writer schemas a reader knows, by the header their records start with.

A record value is framed one of two ways (schemas/framing.py): Avro single-object encoding
(``C3 01`` and the 8-byte CRC-64-AVRO fingerprint of the writer schema) or the Confluent wire
format (magic byte ``00`` and the writer schema's 4-byte big-endian id in a schema registry).
Either header names the writer schema, and Avro's schema resolution reads a datum of any
compatible writer schema as the reader's: a newer writer's added field is skipped, an older
writer's missing one takes its default.

The catalog starts with the reader's own schema and the released versions shipped in
``schemas/released/`` (so records of any release decode without a registry); schemas of
registry ids are added as they are met (``add``), each under its Confluent header and its
single-object one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final, cast

from fastavro import parse_schema, schemaless_reader
from fastavro.schema import fingerprint as schema_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.exceptions import CorruptRecord

MARKER: Final = b"\xc3\x01"  # single-object encoding
MAGIC: Final = b"\x00"  # the Confluent wire format
SINGLE_OBJECT_SIZE: Final = 10
CONFLUENT_SIZE: Final = 5

# (name, type) of the leading fields a push record's head is read from (schemas/head.py), in
# schema order; schemas/_records.c walks exactly these.
HEAD_LAYOUT: Final = (
    ("appId", ["null", "string"]),
    ("channelType", ["null", "int"]),
    ("messageId", "string"),
    ("timestamp", ["null", "long"]),
)

Reader = Callable[[bytes | memoryview, int], Any]


def has_head_layout(schema: dict[str, Any]) -> bool:
    """Whether a record schema starts with HEAD_LAYOUT's fields."""
    found = tuple((field["name"], field["type"]) for field in schema["fields"][: len(HEAD_LAYOUT)])
    return found == HEAD_LAYOUT


def without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [without_logical_types(item) for item in schema]
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


def fingerprint_of(source: dict[str, Any]) -> bytes:
    """The CRC-64-AVRO fingerprint of a schema's Parsing Canonical Form, as the wire has it."""
    canonical = to_parsing_canonical_form(parse_schema(source, named_schemas={}))
    # fastavro gives the hex of the fingerprint's bytes already in little-endian order.
    return bytes.fromhex(schema_fingerprint(canonical, "CRC-64-AVRO"))


def single_object_header(source: dict[str, Any]) -> bytes:
    return MARKER + fingerprint_of(source)


def confluent_header(schema_id: int) -> bytes:
    if not 0 <= schema_id < 2**31:
        raise ValueError(f"a registry schema id is a non-negative int32, got {schema_id}")
    return MAGIC + schema_id.to_bytes(4, "big")


def header_of(data: bytes | memoryview) -> bytes:
    """The bytes of ``data`` that would be a header: 5 after a ``00``, else 10."""
    return bytes(data[:CONFLUENT_SIZE] if data[:1] == MAGIC else data[:SINGLE_OBJECT_SIZE])


def schema_id_of(data: bytes | memoryview) -> int | None:
    """The registry id of a Confluent-framed value, None for any other."""
    if len(data) >= CONFLUENT_SIZE and data[:1] == MAGIC:
        return int.from_bytes(data[1:CONFLUENT_SIZE], "big")
    return None


def load_push_schema() -> dict[str, Any]:
    """The shipped push.avsc as a plain (unparsed) JSON schema."""
    text = resources.files("schemas").joinpath("push.avsc").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


def released_schemas(name: str = "push") -> list[dict[str, Any]]:
    """The released versions of a schema, oldest first: ``schemas/released/<name>-v<N>.avsc``."""
    folder = resources.files("schemas").joinpath("released")
    found = []
    for entry in folder.iterdir():
        stem = entry.name.removesuffix(".avsc")
        if entry.name.endswith(".avsc") and stem.startswith(f"{name}-v"):
            version = int(stem.removeprefix(f"{name}-v"))
            found.append((version, json.loads(entry.read_text(encoding="utf-8"))))
    return [schema for _, schema in sorted(found, key=lambda item: item[0])]


@dataclass(frozen=True)
class Writer:
    """A writer schema as its records are read: ``read(data, offset)`` decodes the datum that
    starts at ``offset`` into the reader's schema (checking it ends the value)."""

    header: bytes
    source: dict[str, Any]
    same: bool  # the reader's own schema (same canonical form): no resolution needed
    read: Reader
    fits: bool  # its datum starts with the fields the C head reader walks (schemas/head.py)

    @property
    def text(self) -> str:
        """The schema's JSON text, as an archive file's header carries it."""
        return json.dumps(self.source, separators=(",", ":"))


class WriterSchemas:
    """Writer schemas by header, for records read as ``reader`` (a plain JSON schema)."""

    def __init__(self, reader: dict[str, Any], known: Iterable[dict[str, Any]] = ()) -> None:
        self.reader = reader
        self._canonical = self._canonical_form(reader)
        self._reader_datum = parse_schema(without_logical_types(reader), named_schemas={})
        self._by_header: dict[bytes, Writer] = {}
        self._missing: set[int] = set()  # ids the registry does not have
        self._missing_headers: set[bytes] = set()  # single-object ones it has no version of
        # The headers of writers whose heads the C reader reads, the reader's own first.
        self.head_headers: tuple[bytes, ...] = ()
        self.own = self._add(single_object_header(reader), reader)
        for source in known:
            self._add(single_object_header(source), source)

    @staticmethod
    def _canonical_form(source: dict[str, Any]) -> str:
        canonical: str = to_parsing_canonical_form(parse_schema(source, named_schemas={}))
        return canonical

    def get(self, data: bytes | memoryview) -> Writer | None:
        return self._by_header.get(header_of(data))

    def __iter__(self) -> Any:
        return iter(self._by_header.values())

    def add(self, schema_id: int, text: str) -> Writer:
        """The schema of a registry id, known from now on by its Confluent header (and its
        single-object one)."""
        source = cast(dict[str, Any], json.loads(text))
        self._add(single_object_header(source), source)
        return self._add(confluent_header(schema_id), source)

    def _add(self, header: bytes, source: dict[str, Any]) -> Writer:
        if header in self._by_header:
            return self._by_header[header]
        same = self._canonical_form(source) == self._canonical
        fits = has_head_layout(source)
        writer = Writer(header, source, same, self._reader_of(source, same), fits)
        self._by_header[header] = writer
        if fits:
            ordered = sorted(
                (w for w in self._by_header.values() if w.fits), key=lambda w: not w.same
            )
            self.head_headers = tuple(w.header for w in ordered)
        return writer

    def _reader_of(self, source: dict[str, Any], same: bool) -> Reader:
        reader = self._reader_datum
        writer = reader if same else parse_schema(without_logical_types(source), named_schemas={})

        def read(data: bytes | memoryview, offset: int) -> Any:
            stream = io.BytesIO(data)
            stream.seek(offset)
            try:
                record = schemaless_reader(stream, writer, None if same else reader)
            except Exception as error:  # untrusted bytes: any decoder failure is corruption
                raise CorruptRecord(f"undecodable datum: {error!r}") from error
            if stream.tell() != len(data):
                raise CorruptRecord(f"{len(data) - stream.tell()} trailing bytes after the datum")
            return record

        return read

    def unknown_ids(self, values: Iterable[bytes | None]) -> set[int]:
        """The registry ids of Confluent-framed values whose schema is not known yet (and not
        known to be missing)."""
        found = set()
        for value in values:
            if value is not None:
                schema_id = schema_id_of(value)
                if (
                    schema_id is not None
                    and schema_id not in self._missing
                    and confluent_header(schema_id) not in self._by_header
                ):
                    found.add(schema_id)
        return found

    def unknown_fingerprints(self, values: Iterable[bytes | None]) -> bool:
        """Whether some single-object value has a fingerprint not known here."""
        return any(
            value is not None
            and value[:2] == MARKER
            and (header := bytes(value[:SINGLE_OBJECT_SIZE])) not in self._by_header
            and header not in self._missing_headers
            for value in values
        )

    def missing_fingerprints(self, values: Iterable[bytes | None]) -> None:
        for value in values:
            if value is not None and value[:2] == MARKER:
                header = bytes(value[:SINGLE_OBJECT_SIZE])
                if header not in self._by_header:
                    self._missing_headers.add(header)

    def missing(self, schema_id: int) -> None:
        """The registry has no such id: its records are dead-lettered without asking again."""
        self._missing.add(schema_id)
