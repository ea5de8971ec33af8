"""Avro schemas of the uplink records, and the codec that builds and frames them."""

from schemas.codec import PushCodec, load_push_schema
from schemas.exceptions import CorruptRecord, NotAPush, SchemaError, UnknownSchema

__all__ = [
    "CorruptRecord",
    "NotAPush",
    "PushCodec",
    "SchemaError",
    "UnknownSchema",
    "load_push_schema",
]
