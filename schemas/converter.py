"""JSON → Avro record: a record schema compiled once into converters, driven by the schema itself
rather than per message type.

The typed view is best effort: whatever does not fit a field's type becomes null there (the
record's ``raw`` keeps the exact body, so nothing is lost and a push is never rejected for a data
quirk). Each converter is a Python closure and has a node for the C walk
(schemas/_converter.c), which takes the common cases itself and hands the rest to the closure.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any, Final, cast

import orjson

from schemas._converter import convert
from schemas.compiler import Array, Nullable, Primitive, Record, Type, resolve

Converter = Callable[[Any], Any]
Node = tuple[Any, ...]  # a converter as schemas/_converter.c walks it
# Node kinds, as _converter.c numbers them.
STRING, INT, BOOLEAN, OTHER, RECORD, ARRAY = range(6)


# --- scalar converters: JSON value → Avro value or None (never raise) -------------------------

# Bounded, so int() never sees thousands of digits; leading zeros are fine.
_INT_TEXT = re.compile(r"[+-]?0*[0-9]{1,19}")
_BOOL_TEXT: Final = {"true": True, "false": False, "1": True, "0": False}
_EXACT_FLOAT_INT: Final = 2**53  # floats beyond this no longer hold every integer exactly


def _to_str(value: object) -> str | None:
    # Narrowed by `type(...) is`, not cast(): this runs for most fields of every push.
    if type(value) is str:
        return value
    if type(value) is int:  # bool is its own type, so True never becomes "True"
        return str(value)
    if type(value) is float:
        return _float_text(value)
    return None


to_str = _to_str  # for formats mapped onto the push (schemas/meta.py)


def _float_text(value: float) -> str:
    # 9.1856321412e10 is a phone number that lost its quotes: render it as digits, no ".0".
    if value.is_integer() and abs(value) < _EXACT_FLOAT_INT:
        return str(int(value))
    return repr(value)


def _to_json_text(value: Any) -> str | None:
    """A string field the table documents as an Object: keep any JSON value as its JSON text."""
    if value is None or type(value) is str:
        return value
    try:
        return orjson.dumps(value).decode()
    except (TypeError, ValueError):  # e.g. an int beyond 64 bits from the lenient parser
        try:
            return json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError, RecursionError):
            return None


def _int_converter(low: int, high: int) -> Converter:
    def convert(value: Any) -> int | None:
        kind = type(value)
        if kind is int:
            number = cast(int, value)
        elif kind is str and _INT_TEXT.fullmatch(text := value.strip()):
            number = int(text)
        elif kind is float and value.is_integer():
            number = int(value)
        else:
            return None
        return number if low <= number <= high else None

    return convert


def _to_bool(value: Any) -> bool | None:
    kind = type(value)
    if kind is bool:
        return cast(bool, value)
    if kind is str:
        return _BOOL_TEXT.get(value.strip().lower())
    if (kind is int or kind is float) and value in (0, 1):
        return bool(value)
    return None


_INT_RANGES: Final = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_PRIMITIVES: Final[dict[str, Converter]] = {
    "string": _to_str,
    **{name: _int_converter(low, high) for name, (low, high) in _INT_RANGES.items()},
    "boolean": _to_bool,
}
# The C walk's node of each (schemas/_converter.c); it ends with the Python converter itself.
_PRIMITIVE_NODES: Final[dict[str, Node]] = {
    "string": (STRING, _to_str),
    **{name: (INT, low, high, _PRIMITIVES[name]) for name, (low, high) in _INT_RANGES.items()},
    "boolean": (BOOLEAN, _to_bool),
}

# Field-level schema attribute ("coerce": "json") selecting a non-default converter; Avro keeps
# unknown attributes as metadata and the Parsing Canonical Form strips them.
_COERCIONS: Final[dict[str, Converter]] = {"json": _to_json_text}


# --- composite converters ---------------------------------------------------------------------


def _array_converter(item: Converter) -> Converter:
    def convert(value: Any) -> list[Any] | None:
        if type(value) is not list:
            return None
        # An item of the wrong shape is dropped from the typed view (it stays in raw).
        return [converted for converted in map(item, value) if converted is not None]

    return convert


def _record_converter(fields: dict[str, Converter], all_names: list[str]) -> Converter:
    template: dict[str, Any] = dict.fromkeys(all_names)

    def convert(value: Any) -> dict[str, Any] | None:
        if type(value) is not dict:
            return None
        out = template.copy()
        for key, item in value.items():
            field = fields.get(key)
            if field is not None:
                out[key] = field(item)
                continue
            # A key with stray spaces ("frequently_forwarded ") still matches its field,
            # unless the exact key is present too, which then wins.
            name = key.strip()
            if name != key and name not in value:
                field = fields.get(name)
                if field is not None:
                    out[name] = field(item)
        return out

    return convert


# --- compiling --------------------------------------------------------------------------------


def compile_converter(schema: dict[str, Any], skip: frozenset[str] = frozenset()) -> Converter:
    """The JSON → record converter of a record schema, walked in C; ``skip``: top-level fields no
    JSON key sets (the caller sets them)."""
    _, node = _Converters(skip).build(resolve(schema))
    return functools.partial(convert, node)


def python_converter(schema: dict[str, Any], skip: frozenset[str] = frozenset()) -> Converter:
    """The same converter as Python closures alone: the reference the C walk is tested against."""
    python, _ = _Converters(skip).build(resolve(schema))
    return python


class _Converters:
    """The converter and C node of each type of a tree, one per record."""

    def __init__(self, skip: frozenset[str]) -> None:
        self._skip = skip  # of the top-level record only
        self._records: dict[Record, tuple[Converter, Node]] = {}

    def build(self, top: Type) -> tuple[Converter, Node]:
        if not isinstance(top, Record):
            raise ValueError("a converter is compiled for a record schema")
        return self._record(top, self._skip)

    def _type(self, node: Type, coerce: str | None = None) -> tuple[Converter, Node]:
        if isinstance(node, Nullable):
            return self._type(node.type, coerce)
        if coerce is not None:
            if not isinstance(node, Primitive) or node.name != "string":
                raise ValueError(f"coerce applies to strings, not to {node!r}")
            return _COERCIONS[coerce], (OTHER, _COERCIONS[coerce])
        if isinstance(node, Primitive):
            if node.name not in _PRIMITIVES:
                raise ValueError(f"no JSON view for Avro type {node.name!r}")
            return _PRIMITIVES[node.name], _PRIMITIVE_NODES[node.name]
        if isinstance(node, Array):
            item, item_node = self._type(node.items)
            array = _array_converter(item)
            return array, (ARRAY, item_node, array)
        if node not in self._records:
            self._records[node] = self._record(node, frozenset())
        return self._records[node]

    def _record(self, record: Record, skip: frozenset[str]) -> tuple[Converter, Node]:
        fields = {
            field.name: self._type(field.type, field.coerce)
            for field in record.fields
            if field.name not in skip
        }
        names = [field.name for field in record.fields]
        converter = _record_converter({name: pair[0] for name, pair in fields.items()}, names)
        node_fields = {name: pair[1] for name, pair in fields.items()}
        return converter, (RECORD, node_fields, dict.fromkeys(names), converter)
