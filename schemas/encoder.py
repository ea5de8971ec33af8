"""Avro binary encoding: a schema compiled once into a program that C walks (_encoder.c).

The ingress encodes every push on its hot path. fastavro resolves each ``["null", record]`` union by
validating the whole subtree against every branch, which made encoding the dominant cost of a
request (bench/RESULTS.md, "Codec paths"). The records handed to this encoder come from the
converter, which already gave every field its schema type, so a union is resolved by ``is None``
alone, and one C call walks the whole program. The output is byte-identical to fastavro's
(tests/schemas/test_properties.py checks that).

Supported: the types of schemas/compiler.py's tree; anything else fails when compiled.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from schemas._encoder import encode
from schemas.compiler import Array, Nullable, Primitive, Record, Type, resolve

# Node kinds of a program, as _encoder.c numbers them.
NULL, BOOLEAN, LONG, STRING, BYTES, RECORD, ARRAY, UNION = range(8)

Program = tuple[Any, ...]

_PRIMITIVES: dict[str, Program] = {
    "null": (NULL,),
    "boolean": (BOOLEAN,),
    "int": (LONG,),
    "long": (LONG,),
    "string": (STRING,),
    "bytes": (BYTES,),
}


def _program(node: Type, records: dict[Record, Program]) -> Program:
    if isinstance(node, Primitive):
        return _PRIMITIVES[node.name]
    if isinstance(node, Nullable):
        return (UNION, node.null_index, _program(node.type, records))
    if isinstance(node, Array):
        return (ARRAY, _program(node.items, records))
    if node not in records:
        records[node] = (
            RECORD,
            # Interned names: the C walk looks each up in the datum's dict by its cached hash.
            tuple((sys.intern(field.name), _program(field.type, records)) for field in node.fields),
        )
    return records[node]


def compile_encoder(schema: Any, prefix: bytes = b"") -> Callable[[Any], bytes]:
    """A function datum → ``prefix`` + Avro binary, for a plain (unparsed) JSON schema."""
    return functools.partial(encode, _program(resolve(schema), {}), bytes(prefix))
