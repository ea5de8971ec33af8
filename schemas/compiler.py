"""An Avro JSON schema read once into a tree of types: the front end of the schema compilers.

Three things are compiled from a schema: the JSON → record converter (schemas/converter.py), the
binary encoder (schemas/encoder.py) and the views of chosen fields (schemas/view.py). Each walks
the same tree, built here: named types resolved against their namespaces, a primitive with a
``logicalType`` reduced to the primitive, and the one kind of union uplink's schemas use,
``[null, T]`` in either order. A named record is one object wherever the schema names it, so a
compiler can build its part once per record. Anything else fails here, when compiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, TypeAlias

PRIMITIVES: Final = frozenset({"null", "boolean", "int", "long", "string", "bytes"})


@dataclass(frozen=True, eq=False)
class Primitive:
    name: str  # one of PRIMITIVES


@dataclass(frozen=True, eq=False)
class Nullable:
    """A ``[null, T]`` (or ``[T, null]``) union."""

    null_index: int  # the branch index of null: 0 or 1
    type: Type


@dataclass(frozen=True, eq=False)
class Array:
    items: Type


@dataclass(frozen=True, eq=False)
class Field:
    name: str
    type: Type
    # Field-level attribute ("coerce": "json") selecting a non-default JSON converter; Avro keeps
    # unknown attributes as metadata and the Parsing Canonical Form strips them.
    coerce: str | None = None


@dataclass(frozen=True, eq=False)
class Record:
    name: str  # as the schema spells it
    full_name: str  # with its namespace
    fields: tuple[Field, ...]


Type: TypeAlias = Primitive | Nullable | Array | Record


def resolve(schema: Any) -> Type:
    """The type tree of a plain (unparsed) JSON schema; raises ValueError for what uplink's
    compilers do not support."""
    return _Resolver().type(schema, "")


class _Resolver:
    def __init__(self) -> None:
        self._named: dict[str, Record] = {}

    def type(self, schema: Any, namespace: str) -> Type:
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return Primitive(schema)
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            found = self._named.get(full) or self._named.get(schema)
            if found is None:
                # Named types are defined before use; a record still being read (recursion)
                # is not defined yet.
                raise ValueError(f"unknown (or recursive) named type {schema!r}")
            return found
        if isinstance(schema, list):
            if len(schema) != 2 or "null" not in schema or schema[0] == schema[1]:
                raise ValueError(f"only [null, T] unions are supported, got {schema!r}")
            null_index = schema.index("null")
            return Nullable(null_index, self.type(schema[1 - null_index], namespace))
        kind = schema["type"]
        if kind == "record":
            return self._record(schema, namespace)
        if kind == "array":
            return Array(self.type(schema["items"], namespace))
        if isinstance(kind, str) and kind in PRIMITIVES:  # e.g. a long with a logicalType
            return Primitive(kind)
        raise ValueError(f"unsupported Avro type {kind!r}")

    def _record(self, schema: dict[str, Any], namespace: str) -> Record:
        name: str = schema["name"]
        if "." in name:
            full = name
            namespace = name.rpartition(".")[0]
        else:
            namespace = schema.get("namespace", namespace)
            full = f"{namespace}.{name}" if namespace else name
        fields = tuple(
            Field(field["name"], self.type(field["type"], namespace), field.get("coerce"))
            for field in schema["fields"]
        )
        record = Record(name, full, fields)
        self._named[full] = record
        self._named.setdefault(name, record)
        return record
