"""Avro binary encoding compiled once from a schema into small closures.

The ingress encodes every push on its hot path. fastavro resolves each ``["null", record]`` union by
validating the whole subtree against every branch, which made encoding the dominant cost of a
request (about 20 µs for a text push and over 100 µs for contacts). The records handed to this
encoder come from the codec, whose converters already gave every field its schema type, so a
union is resolved by ``is None`` alone. The output is byte-identical to fastavro's
(tests/schemas/test_properties.py checks that).

Supported: the types push.avsc uses — null, boolean, int, long, string, bytes, records, arrays and
unions of null with one other type. Anything else fails loudly when the encoder is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Writer = Callable[[Any, bytearray], None]

# Lengths and small ints dominate: precompute their varints.
_SMALL = 4096


def _zigzag_varint(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_VARINTS = [_zigzag_varint(n) for n in range(_SMALL)]


def _long(value: int, out: bytearray) -> None:
    out += _VARINTS[value] if 0 <= value < _SMALL else _zigzag_varint(value)


def _string(value: str, out: bytearray) -> None:
    data = value.encode()
    size = len(data)
    out += _VARINTS[size] if size < _SMALL else _zigzag_varint(size)
    out += data


def _bytes(value: bytes, out: bytearray) -> None:
    size = len(value)
    out += _VARINTS[size] if size < _SMALL else _zigzag_varint(size)
    out += value


def _boolean(value: bool, out: bytearray) -> None:
    out.append(1 if value else 0)


def _null(value: None, out: bytearray) -> None:
    return None


_PRIMITIVES: dict[str, Writer] = {
    "null": _null,
    "boolean": _boolean,
    "int": _long,
    "long": _long,
    "string": _string,
    "bytes": _bytes,
}


class _Compiler:
    def __init__(self) -> None:
        self._named: dict[str, Writer] = {}

    def compile(self, schema: Any, namespace: str = "") -> Writer:
        if isinstance(schema, str):
            if schema in _PRIMITIVES:
                return _PRIMITIVES[schema]
            name = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            if name in self._named:
                return self._named[name]
            if schema in self._named:
                return self._named[schema]
            raise ValueError(f"unknown named type {schema!r}")
        if isinstance(schema, list):
            return self._union(schema, namespace)
        kind = schema["type"]
        if kind == "record":
            return self._record(schema, namespace)
        if kind == "array":
            return self._array(self.compile(schema["items"], namespace))
        if isinstance(kind, str) and kind in _PRIMITIVES:  # a primitive with a logicalType
            return _PRIMITIVES[kind]
        raise ValueError(f"unsupported Avro type {kind!r}")

    def _union(self, branches: list[Any], namespace: str) -> Writer:
        if len(branches) != 2 or "null" not in branches:
            raise ValueError(f"only [null, T] unions are supported, got {branches!r}")
        null_index = branches.index("null")
        other = self.compile(branches[1 - null_index], namespace)
        null_tag, value_tag = (b"\x00", b"\x02") if null_index == 0 else (b"\x02", b"\x00")

        def union(value: Any, out: bytearray) -> None:
            if value is None:
                out += null_tag
            else:
                out += value_tag
                other(value, out)

        return union

    def _record(self, schema: dict[str, Any], namespace: str) -> Writer:
        name = schema["name"]
        namespace = schema.get("namespace", namespace)
        full_name = name if "." in name or not namespace else f"{namespace}.{name}"
        fields: list[tuple[str, Writer]] = []

        def record(value: dict[str, Any], out: bytearray) -> None:
            get = value.get
            for field, write in fields:
                write(get(field), out)

        # Registered before its fields compile, so a recursive reference resolves.
        self._named[full_name] = record
        self._named[name] = record
        fields.extend((f["name"], self.compile(f["type"], namespace)) for f in schema["fields"])
        return record

    @staticmethod
    def _array(item: Writer) -> Writer:
        def array(value: list[Any], out: bytearray) -> None:
            if value:
                _long(len(value), out)
                for element in value:
                    item(element, out)
            out += b"\x00"

        return array


def compile_encoder(schema: Any, prefix: bytes = b"") -> Callable[[Any], bytes]:
    """A function datum → ``prefix`` + Avro binary, for a plain (unparsed) JSON schema."""
    write = _Compiler().compile(schema)

    def encode(datum: Any) -> bytes:
        out = bytearray(prefix)
        write(datum, out)
        return bytes(out)

    return encode
