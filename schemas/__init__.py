"""Avro schemas of the uplink records, and the codec that builds, frames and reads them: the
push's writer (schemas/writer.py), reader (schemas/reader.py) and registry client
(schemas/registry.py), together as ``PushCodec`` (schemas/codec.py)."""

from schemas.codec import PushCodec, load_push_schema
from schemas.exceptions import CorruptRecord, NotAPush, SchemaError, UnknownSchema
from schemas.media import MediaCodec, load_media_schema
from schemas.reader import PushReader
from schemas.registry import RegistryClient
from schemas.writer import PushWriter

__all__ = [
    "CorruptRecord",
    "MediaCodec",
    "NotAPush",
    "PushCodec",
    "PushReader",
    "PushWriter",
    "RegistryClient",
    "SchemaError",
    "UnknownSchema",
    "load_media_schema",
    "load_push_schema",
]
