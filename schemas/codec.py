"""JSON push → Avro record, framed as Avro single-object encoding (schemas/framing.py).

The typed view is best effort: whatever does not fit a field's type becomes null there, while
`raw` keeps the exact body, so nothing is lost and a push is never rejected for a data quirk.
Normalisation is compiled once per schema node into small converter closures (the ingress calls
`parse` and `encode` on its hot path), driven by the schema itself rather than per message type.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any, Final, cast

import orjson

from schemas._converter import convert
from schemas.exceptions import CorruptRecord, NotAPush, UnknownSchema
from schemas.framing import Framing
from schemas.head import HeadReader, Heads, decoded_heads
from schemas.writers import MARKER, SchemaLookup, released_schemas, schema_id_of
from uplink.exceptions import UplinkError

# Set by the ingress, never read from the JSON body (a body key "raw" must not override them).
INGRESS_FIELDS: Final = frozenset({"raw", "receivedAt", "source", "meta"})
UPLINK_SOURCE: Final = "uplink"  # push.avsc's `source` of the provider's pushes

Converter = Callable[[Any], Any]
Node = tuple[Any, ...]  # a converter as schemas/_converter.c walks it
# Node kinds, as _converter.c numbers them.
STRING, INT, BOOLEAN, OTHER, RECORD, ARRAY = range(6)


def load_push_schema() -> dict[str, Any]:
    """The shipped push.avsc as a plain (unparsed) JSON schema."""
    text = resources.files("schemas").joinpath("push.avsc").read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


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


def compile_converter(schema: dict[str, Any], skip: frozenset[str] = frozenset()) -> Converter:
    """The JSON → record converter of a record schema; ``skip``: top-level fields no JSON key
    sets (the caller sets them)."""
    return _Compiler().record(schema, skip)


class _Compiler:
    """Walks an Avro schema once and builds the JSON → record converter for each node.

    Each converter is a Python closure, and has a node for the C walk (schemas/_converter.c)
    that takes the common cases itself and hands the rest to the closure: ``push`` returns
    the C walk of the top-level record.
    """

    def __init__(self) -> None:
        self._named: dict[str, Converter] = {}
        self._nodes: dict[Converter, Node] = {}

    def push(self, schema: dict[str, Any]) -> Converter:
        """The converter of the top-level record, whose ingress fields no body key can set."""
        return self.record(schema, INGRESS_FIELDS)

    def record(self, schema: dict[str, Any], skip: frozenset[str]) -> Converter:
        top = self._record(schema, "", skip=skip)
        return functools.partial(convert, self._nodes[top])

    def node(self, schema: Any, namespace: str, coerce: str | None = None) -> Converter:
        if isinstance(schema, list):
            branches = [branch for branch in schema if branch != "null"]
            if len(branches) != 1:
                raise ValueError(f"only [null, T] unions have a JSON view: {schema!r}")
            return self.node(branches[0], namespace, coerce)
        if isinstance(schema, str):
            if coerce is not None:
                if schema != "string":
                    raise ValueError(f"coerce applies to strings, not to {schema!r}")
                return self._with_node(_COERCIONS[coerce], (OTHER, _COERCIONS[coerce]))
            if schema in _PRIMITIVES:
                return self._with_node(_PRIMITIVES[schema], _PRIMITIVE_NODES[schema])
            full = schema if "." in schema or not namespace else f"{namespace}.{schema}"
            if full not in self._named:
                raise ValueError(f"unknown (or recursive) named type {schema!r}")
            return self._named[full]
        kind = schema["type"]
        if kind == "record":
            return self._record(schema, namespace)
        if kind == "array":
            item = self.node(schema["items"], namespace)
            array = _array_converter(item)
            return self._with_node(array, (ARRAY, self._nodes[item], array))
        if isinstance(kind, str) and kind in _PRIMITIVES:  # e.g. a long with a logicalType
            return self.node(kind, namespace, coerce)
        raise ValueError(f"no JSON view for Avro type {kind!r}")

    def _record(
        self, schema: dict[str, Any], namespace: str, skip: frozenset[str] = frozenset()
    ) -> Converter:
        name: str = schema["name"]
        if "." in name:
            full = name
            namespace = name.rpartition(".")[0]
        else:
            namespace = schema.get("namespace", namespace)
            full = f"{namespace}.{name}" if namespace else name
        fields: dict[str, Converter] = {}
        for field in schema["fields"]:
            if field["name"] not in skip:
                fields[field["name"]] = self.node(field["type"], namespace, field.get("coerce"))
        names = [field["name"] for field in schema["fields"]]
        converter = _record_converter(fields, names)
        node_fields = {key: self._nodes[field] for key, field in fields.items()}
        self._with_node(converter, (RECORD, node_fields, dict.fromkeys(names), converter))
        self._named[full] = converter
        return converter

    def _with_node(self, converter: Converter, node: Node) -> Converter:
        self._nodes[converter] = node
        return converter


# --- JSON loading -----------------------------------------------------------------------------

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
JSON_KINDS: Final[dict[type, str]] = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def load_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        strict_error = error
    # Rare path. orjson refuses a few bodies that are still JSON (RFC 8259): a leading UTF-8
    # BOM, escaped lone surrogates ("\ud800"), numbers beyond a double. Those are quirks, not
    # reasons to reject a push, so retry with the standard library before giving up.
    if not raw.strip(b" \t\r\n"):
        raise NotAPush("body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotAPush(f"body is not valid UTF-8 (byte {error.start})") from None
    try:
        value = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise NotAPush(f"body is not JSON: {strict_error}") from None
    return _replace_lone_surrogates(value)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _replace_lone_surrogates(root: Any) -> Any:
    """Make every string UTF-8 encodable (Avro strings are UTF-8); iterative, so depth is free."""

    def fix(text: str) -> str:
        return _LONE_SURROGATE.sub("\ufffd", text)

    if type(root) is str:
        return fix(root)
    pending = [root]
    while pending:
        node = pending.pop()
        if type(node) is dict:
            if any(_LONE_SURROGATE.search(key) for key in node):
                items = list(node.items())
                node.clear()
                node.update((fix(key), value) for key, value in items)
            for key, value in node.items():
                if type(value) is str:
                    node[key] = fix(value)
                elif type(value) in (dict, list):
                    pending.append(value)
        elif type(node) is list:
            for index, value in enumerate(node):
                if type(value) is str:
                    node[index] = fix(value)
                elif type(value) in (dict, list):
                    pending.append(value)
    return root


def _message_id_problem(body: dict[str, Any]) -> str:
    key = "messageId"
    if key not in body:
        key = next((k for k in body if k.strip() == "messageId"), key)
    if key not in body:
        return "messageId is missing"
    value = body[key]
    if value is None:
        return "messageId is null"
    if type(value) is str:
        return "messageId is empty"
    return f"messageId is a JSON {JSON_KINDS.get(type(value))}, not a string or number"


# --- the codec --------------------------------------------------------------------------------


class PushCodec(Framing):
    """Turns a push body into a record and frames records for Kafka; build once, reuse."""

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
        super().__init__(source, released_schemas() if known is None else known)
        self._push = _Compiler().push(source)
        self._reader = HeadReader(self.writers) if HeadReader.fits(source) else None
        self._lookup = lookup
        # push.avsc has it since v2; a custom schema may not.
        self._sourced = any(f["name"] == "source" for f in source["fields"])
        # An all-null Message, for pushes that carry only a top-level `type`.
        self._empty_message: dict[str, Any] | None = self._push({"message": {}}).get("message")

    def parse(self, raw: bytes, received_at_ms: int) -> dict[str, Any]:
        """A push body → record; raises NotAPush when the body is not a push at all."""
        if not raw:
            raise NotAPush("body is empty")
        body = load_json(raw)
        if type(body) is not dict:
            raise NotAPush(f"body is a JSON {JSON_KINDS.get(type(body))}, not an object")
        record: dict[str, Any] = self._push(body)
        message_id = record["messageId"]
        if message_id is None or not message_id.strip():
            raise NotAPush(_message_id_problem(body))
        if self._empty_message is not None:
            self._lift_top_level_type(body, record)
        record["raw"] = raw
        record["receivedAt"] = received_at_ms
        if self._sourced:
            record["source"] = UPLINK_SOURCE
        return record

    def convert(self, body: dict[str, Any]) -> dict[str, Any]:
        """The typed view of a push-shaped JSON object (no ingress fields set): for other
        formats mapped onto the push, such as Meta's webhook (schemas/meta.py)."""
        record: dict[str, Any] = self._push(body)
        return record

    def _lift_top_level_type(self, body: dict[str, Any], record: dict[str, Any]) -> None:
        # The spec's "unknown" example puts `type` at top level, with no message object.
        message = record["message"]
        if message is not None and message["type"] is not None:
            return
        top_type = to_str(body.get("type"))
        if top_type is None:
            return
        if message is None:
            message = record["message"] = dict(cast(dict[str, Any], self._empty_message))
        message["type"] = top_type

    def head(self, data: bytes) -> tuple[str, int | None]:
        """(messageId, timestamp or None) of a record, without decoding the rest of it.

        Checks the framing and the leading fields only: a datum corrupt further on passes.
        """
        if self._reader is not None:
            ids, stamps, failed = self.heads((data,))
            if failed:
                why = failed[0][1]
                known = self.writers.get(data) is not None
                raise CorruptRecord(why) if known else UnknownSchema(why)
            return ids[0], stamps[0]
        record = self.decode(data)
        return record["messageId"], record.get("timestamp")

    def heads(self, values: Sequence[bytes | None]) -> Heads:
        """``head`` of each value of a fetched batch, in one call, by column; for a value with
        none, why (the reason a worker dead-letters it with)."""
        if self._reader is not None:
            found = self._reader.read_many(values)
            if found.failed:
                self._explain(values, found.failed)
            return found
        return decoded_heads(self.writers, values)  # a schema laid out otherwise: decoded

    def _explain(self, values: Sequence[bytes | None], failed: list[tuple[int, str]]) -> None:
        """A value of a writer schema not known says which, and where it could be found."""
        for position, (index, why) in enumerate(failed):
            value = values[index]
            if value is None or self.writers.get(value) is not None:
                continue
            schema_id = schema_id_of(value)
            if schema_id is not None:
                where = (
                    "not in the schema registry"
                    if self._lookup is not None
                    else "no schema registry configured: set UPLINK_SCHEMA_REGISTRY_URL"
                )
                why = f"unknown writer schema: registry id {schema_id} ({where})"
            elif value[:2] == MARKER:
                fingerprint = bytes(value[2:10]).hex()
                why = f"unknown writer schema: fingerprint {fingerprint} (a newer release?)"
            failed[position] = (index, why)

    async def learn(self, values: Sequence[bytes | None]) -> bool:
        """Fetch the writer schemas of values framed with ids (or single-object fingerprints)
        not known yet from the registry; True if one was learnt (read the batch again). Raises
        RegistryUnavailable (retriable) while the registry does not answer; an id it does not
        have is remembered as missing, and its records are dead-lettered."""
        if self._lookup is None:
            return False
        writers = self.writers
        learnt = False
        for schema_id in sorted(writers.unknown_ids(values)):
            try:
                text = await self._lookup.schema(schema_id)
            except UplinkError as exc:
                if exc.retriable:
                    raise
                writers.missing(schema_id)
                continue
            writers.add(schema_id, text)
            learnt = True
        if writers.unknown_fingerprints(values):
            # The registry has no lookup by fingerprint: a newer writer's versions are few.
            for schema_id, text in await self._lookup.versions():
                writers.add(schema_id, text)
            learnt = True
            writers.missing_fingerprints(values)  # not in the registry either: not asked again
        return learnt

    @staticmethod
    def key(record: dict[str, Any]) -> bytes:
        """Kafka key: the conversation, `businessPhone:from.phone` (missing parts empty)."""
        sender = record.get("from")
        phone = sender.get("phone") if sender else None
        return f"{record.get('businessPhone') or ''}:{phone or ''}".encode()
