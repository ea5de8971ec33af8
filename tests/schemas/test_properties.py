"""PushCodec over generated input: junk never breaks parse, and records always round-trip."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import CorruptRecord, NotAPush, PushCodec, SchemaError, load_push_schema
from schemas.converter import compile_converter, python_converter
from schemas.framing import HEADER_SIZE
from schemas.writer import INGRESS_FIELDS

CODEC = PushCodec()
FASTAVRO_SCHEMA = parse_schema(load_push_schema())
EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.json"))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any JSON value, including integers beyond 64 bits and non-ASCII text.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _key_variants(name: str) -> st.SearchStrategy[str]:
    return st.sampled_from([name, name, name + " ", " " + name, f" {name} "])


def _shaped(
    schema: Any, named: dict[str, st.SearchStrategy[Any]], namespace: str
) -> st.SearchStrategy[Any]:
    """Values for a schema node: mostly the right shape, sometimes stringly typed or junk."""
    if isinstance(schema, list):
        [branch] = [b for b in schema if b != "null"]
        return _shaped(branch, named, namespace)
    if isinstance(schema, str):
        if schema == "string":
            return (
                st.text(max_size=12)
                | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False)
                | json_values
            )
        if schema in ("int", "long"):
            return (
                st.integers()
                | st.integers(-(2**40), 2**40).map(lambda n: f" {n} ")
                | st.floats(allow_nan=False, allow_infinity=False)
                | json_values
            )
        if schema == "boolean":
            return (
                st.booleans()
                | st.sampled_from(["true", "FALSE", " 1 ", "0", "yes", 1, 0, 2])
                | json_values
            )
        full = schema if "." in schema else f"{namespace}.{schema}"
        return named[full]
    if schema["type"] == "array":
        return st.lists(_shaped(schema["items"], named, namespace), max_size=3) | json_values
    if schema["type"] == "record":
        namespace = schema.get("namespace", namespace)
        pairs = [
            st.tuples(_key_variants(f["name"]), _shaped(f["type"], named, namespace))
            for f in schema["fields"]
            if f["name"] not in ("raw", "receivedAt")
        ]
        record = st.lists(
            st.one_of(*pairs, st.tuples(st.text(max_size=8), json_values)), max_size=8
        )
        strategy = record.map(dict) | json_values
        named[f"{namespace}.{schema['name']}"] = strategy
        return strategy
    return _shaped(schema["type"], named, namespace)  # a primitive with a logicalType


push_like = _shaped(load_push_schema(), {}, "").filter(lambda v: isinstance(v, dict))
# orjson reads integers beyond 64 bits as floats, so a numeric messageId stays within them.
message_ids = st.text(min_size=1, max_size=20).filter(str.strip) | st.integers(-(2**63), 2**64 - 1)


@SETTINGS
@given(
    body=push_like,
    message_id=message_ids,
    ascii_only=st.booleans(),
    received_at=st.integers(0, 2**42),
)
def test_any_object_with_a_message_id_parses_and_roundtrips(
    body: dict[str, Any], message_id: str | int, ascii_only: bool, received_at: int
) -> None:
    body["messageId"] = message_id
    if ascii_only:  # escaped non-ASCII goes through a different path of the JSON parser
        raw = json.dumps(body).encode()
    else:
        raw = json.dumps(body, ensure_ascii=False).encode()
    record = CODEC.parse(raw, received_at)
    assert record["raw"] == raw
    assert record["receivedAt"] == received_at
    assert record["messageId"] == str(message_id)
    assert CODEC.decode(CODEC.encode(record)) == record
    assert CODEC.encode(record) == _fastavro_encoding(record)
    assert CODEC.head(CODEC.encode(record)) == (record["messageId"], record["timestamp"])
    PushCodec.key(record)


# The Python converters alone, as schemas/converter.py compiles them: the reference for the C walk.
PYTHON_PUSH = python_converter(load_push_schema(), INGRESS_FIELDS)
C_PUSH = compile_converter(load_push_schema(), INGRESS_FIELDS)


@SETTINGS
@given(body=push_like | json_values)
def test_the_c_walk_gives_what_the_python_converters_give(body: Any) -> None:
    # Shaped bodies, stringly typed values, stray spaces in keys, junk: every path of it.
    walked = C_PUSH(body)
    assert walked == PYTHON_PUSH(body)
    assert [type(v) for v in (walked or {}).values()] == [
        type(v) for v in (PYTHON_PUSH(body) or {}).values()
    ]


def _fastavro_encoding(record: dict[str, Any]) -> bytes:
    """The reference: fastavro's own writer (our encoder is compiled for speed, see encoder.py)."""
    out = io.BytesIO(CODEC.header)
    out.seek(0, io.SEEK_END)
    schemaless_writer(out, FASTAVRO_SCHEMA, record)
    return out.getvalue()


def _mutated(raw: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    data = bytearray(raw)
    for position, replacement in cuts:
        index = position % (len(data) + 1)
        data[index : index + len(replacement)] = replacement
    return bytes(data)


any_bytes = (
    st.binary(max_size=200)
    | st.text(max_size=200).map(str.encode)
    | st.builds(
        _mutated,
        st.sampled_from(EXAMPLES).map(Path.read_bytes),
        st.lists(st.tuples(st.integers(0, 4000), st.binary(max_size=3)), max_size=4),
    )
    | json_values.map(lambda v: json.dumps(v).encode())
)


@SETTINGS
@given(raw=any_bytes)
def test_any_bytes_are_a_push_or_not_a_push(raw: bytes) -> None:
    try:
        record = CODEC.parse(raw, 0)
    except NotAPush as not_a_push:
        assert not_a_push.reason
        return
    raw.decode("utf-8")  # nothing that is not UTF-8 is ever accepted
    assert CODEC.decode(CODEC.encode(record)) == record


@SETTINGS
@given(datum=st.binary(max_size=300), example=st.sampled_from(EXAMPLES))
def test_any_datum_after_our_header_decodes_or_is_corrupt(datum: bytes, example: Path) -> None:
    encoded = CODEC.encode(CODEC.parse(example.read_bytes(), 0))
    for data in (CODEC.header + datum, encoded[: 10 + len(datum) % (len(encoded) - 9)]):
        try:
            head = CODEC.head(data)  # reads less: may pass where the decode fails, never raise else
        except CorruptRecord:
            head = None
        try:
            record = CODEC.decode(data)
        except CorruptRecord:
            continue
        assert isinstance(record, dict)
        assert head == (record["messageId"], record["timestamp"])


def _encoded_cut(example: Path, cut: int) -> bytes:
    encoded = CODEC.encode(CODEC.parse(example.read_bytes(), 0))
    return encoded[: HEADER_SIZE + cut % (len(encoded) - HEADER_SIZE + 1)]


record_values = st.lists(
    st.none()
    | st.binary(max_size=30)
    | st.binary(max_size=60).map(CODEC.header.__add__)
    | st.builds(_encoded_cut, st.sampled_from(EXAMPLES), st.integers(0, 4000)),
    max_size=20,
)


@SETTINGS
@given(values=record_values)
def test_heads_of_a_batch_answer_as_head_one_by_one(values: list[bytes | None]) -> None:
    ids, stamps, failed = CODEC.heads(values)
    heads, why = [], []
    for index, value in enumerate(values):
        try:
            if value is None:
                raise CorruptRecord("no value")
            heads.append(CODEC.head(value))
        except SchemaError as exc:
            why.append((index, str(exc)))  # the reason the runtime dead-letters a record with
    assert list(zip(ids, stamps, strict=True)) == heads
    assert failed == why
