"""Avro schemas of the uplink records, and the codec that builds and frames them."""

from schemas.codec import PushCodec, load_push_schema
from schemas.exceptions import CorruptRecord, NotAPush, SchemaError, UnknownSchema
from schemas.media import MediaCodec, load_media_schema

__all__ = [
    "CorruptRecord",
    "MediaCodec",
    "NotAPush",
    "PushCodec",
    "SchemaError",
    "UnknownSchema",
    "load_media_schema",
    "load_push_schema",
]
