"""Avro binary encoding: a schema compiled once into a program that C walks (_encoder.c).

The ingress encodes every push on its hot path. fastavro resolves each ``["null", record]`` union by
validating the whole subtree against every branch, which made encoding the dominant cost of a
request (about 20 µs for a text push and over 100 µs for contacts). The records handed to this
encoder come from the codec, whose converters already gave every field its schema type, so a
union is resolved by ``is None`` alone. As Python closures that still cost about a hundred calls a
push; the same program walked in C costs one. The output is byte-identical to fastavro's
(tests/schemas/test_properties.py checks that).

Supported: the types push.avsc uses — null, boolean, int, long, string, bytes, records, arrays and
unions of null with one other type. Anything else fails loudly when the encoder is compiled.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

from schemas._encoder import encode

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


class _Compiler:
    def __init__(self) -> None:
        self._named: dict[str, Program] = {}

    def compile(self, schema: Any, namespace: str = "") -> Program:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            name = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            if name in self._named:
                return self._named[name]
            if schema in self._named:
                return self._named[schema]
            # Named types are defined before use; a reference to one still being compiled
            # (recursion) cannot be a tuple of itself.
            raise ValueError(f"unknown (or recursive) named type {schema!r}")
        if isinstance(schema, list):
            return self._union(schema, namespace)
        kind = schema["type"]
        if kind == "record":
            return self._record(schema, namespace)
        if kind == "array":
            return (ARRAY, self.compile(schema["items"], namespace))
        if isinstance(kind, str) and kind in _PRIMITIVES:  # a primitive with a logicalType
            return _PRIMITIVES[kind]
        raise ValueError(f"unsupported Avro type {kind!r}")

    def _union(self, branches: list[Any], namespace: str) -> Program:
        if len(branches) != 2 or "null" not in branches:
            raise ValueError(f"only [null, T] unions are supported, got {branches!r}")
        null_index = branches.index("null")
        return (UNION, null_index, self.compile(branches[1 - null_index], namespace))

    def _record(self, schema: dict[str, Any], namespace: str) -> Program:
        name = schema["name"]
        namespace = schema.get("namespace", namespace)
        full_name = name if "." in name or not namespace else f"{namespace}.{name}"
        fields = tuple(
            # Interned names: the C walk looks each up in the datum's dict by its cached hash.
            (sys.intern(f["name"]), self.compile(f["type"], namespace))
            for f in schema["fields"]
        )
        program = (RECORD, fields)
        self._named[full_name] = program
        self._named[name] = program
        return program


def compile_encoder(schema: Any, prefix: bytes = b"") -> Callable[[Any], bytes]:
    """A function datum → ``prefix`` + Avro binary, for a plain (unparsed) JSON schema."""
    return functools.partial(encode, _Compiler().compile(schema), bytes(prefix))
