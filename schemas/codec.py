"""The push codec: the push's writer, reader and registry client, built together over one
catalog of writer schemas, as the ingress and the workers use them.

Each part is its own module: schemas/writer.py (body → record → bytes), schemas/reader.py
(bytes → heads, views, records) and schemas/registry.py (writer schemas fetched from the
registry). A process that needs one part only may build that part alone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from schemas.head import Heads
from schemas.reader import PushReader
from schemas.registry import RegistryClient, SchemaLookup
from schemas.view import Shape
from schemas.writer import INGRESS_FIELDS, UPLINK_SOURCE, PushWriter
from schemas.writers import WriterSchemas, load_push_schema, released_schemas

__all__ = ["INGRESS_FIELDS", "UPLINK_SOURCE", "PushCodec", "load_push_schema"]


class PushCodec:
    """Turns a push body into a record, frames records for Kafka and reads them back; build
    once, reuse."""

    # The parts' methods, bound once: the ingress's and the workers' hot paths call them.
    parse: Callable[[bytes, int], dict[str, Any]]
    convert: Callable[[dict[str, Any]], dict[str, Any]]
    encode: Callable[[dict[str, Any]], bytes]
    decode: Callable[[bytes | memoryview], dict[str, Any]]
    head: Callable[[bytes], tuple[str, int | None]]
    heads: Callable[[Sequence[bytes | None]], Heads]
    viewer: Callable[[Shape], Callable[[bytes], dict[str, Any]]]
    learn: Callable[[Sequence[bytes | None]], Awaitable[bool]]
    key = staticmethod(PushWriter.key)

    def __init__(
        self,
        schema: dict[str, Any] | None = None,
        *,
        known: list[dict[str, Any]] | None = None,
        lookup: SchemaLookup | None = None,
    ) -> None:
        """``schema``: the reader's (and writer's) schema, push.avsc by default; ``known``:
        other writer schemas its records may carry (default: the released versions);
        ``lookup``: the registry, for writer schemas of ids (and fingerprints) not known."""
        source = load_push_schema() if schema is None else schema
        self.writers = WriterSchemas(source, released_schemas() if known is None else known)
        self.writer = PushWriter(source)
        self.registry = RegistryClient(self.writers, lookup)
        self.reader = PushReader(self.writers, self.registry)
        self.parse, self.convert, self.encode = (
            self.writer.parse,
            self.writer.convert,
            self.writer.encode,
        )
        self.decode, self.head, self.heads = self.reader.decode, self.reader.head, self.reader.heads
        self.viewer, self.learn = self.reader.viewer, self.registry.learn

    @property
    def schema(self) -> dict[str, Any]:
        """The schema, parsed by fastavro."""
        return self.writer.schema

    @property
    def fingerprint(self) -> bytes:
        return self.writer.fingerprint

    @property
    def header(self) -> bytes:
        """What ``encode`` writes before each datum."""
        return self.writer.header

    @property
    def schema_id(self) -> int | None:
        """The registry id ``encode`` writes, None while it writes single-object encoding."""
        return self.writer.schema_id

    @property
    def text(self) -> str:
        """The schema's JSON text, as it is registered."""
        return self.writer.text

    def frame_with(self, schema_id: int) -> None:
        """Write the Confluent framing with ``schema_id`` from now on (set at start-up, once the
        schema is registered); records framed with it read back from then on."""
        self.writers.add(schema_id, self.text)
        self.writer.frame_with(schema_id)
