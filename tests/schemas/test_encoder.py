"""The compiled encoder: fastavro's bytes for every type it supports, and loud misuse."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.encoder import compile_encoder

SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "All",
    "namespace": "test",
    "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "small", "type": "int"},
        {"name": "big", "type": "long"},
        {"name": "text", "type": "string"},
        {"name": "blob", "type": "bytes"},
        {"name": "maybe", "type": ["null", "string"]},
        {"name": "later", "type": ["long", "null"]},
        {"name": "nothing", "type": "null"},
        {
            "name": "inner",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "Inner",
                    "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}],
                },
            ],
        },
        {"name": "again", "type": ["null", "Inner"]},
        {"name": "when", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}

records = st.fixed_dictionaries(
    {
        "flag": st.booleans(),
        "small": st.integers(-(2**31), 2**31 - 1),
        "big": st.integers(-(2**63), 2**63 - 1),
        "text": st.text(),
        "blob": st.binary(),
        "maybe": st.none() | st.text(),
        "later": st.none() | st.integers(-(2**63), 2**63 - 1),
        "nothing": st.none(),
        "inner": st.none() | st.fixed_dictionaries({"tags": st.lists(st.text(), max_size=5)}),
        "again": st.none() | st.fixed_dictionaries({"tags": st.lists(st.text(), max_size=5)}),
        "when": st.integers(0, 2**42),
    }
)


@settings(max_examples=300, deadline=None)
@given(records, st.binary(max_size=6))
def test_bytes_are_fastavros_after_the_prefix(record: dict[str, Any], prefix: bytes) -> None:
    expected = io.BytesIO()
    schemaless_writer(expected, parse_schema(SCHEMA), record)
    assert compile_encoder(SCHEMA, prefix)(record) == prefix + expected.getvalue()


def test_a_missing_field_is_null_as_dict_get_gives_it() -> None:
    encode = compile_encoder(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": ["null", "long"]}]}
    )
    assert encode({}) == b"\x00"
    assert encode({"a": 3}) == b"\x02\x06"


@pytest.mark.parametrize(
    ("field_type", "value", "error"),
    [
        ("long", "7", TypeError),
        ("long", 2**63, OverflowError),
        ("string", b"bytes", TypeError),
        ("bytes", "text", TypeError),
        ({"type": "array", "items": "long"}, (1, 2), TypeError),
        ("string", "\udc80", UnicodeEncodeError),  # a lone surrogate has no UTF-8
    ],
)
def test_a_value_of_the_wrong_type_fails_loudly(
    field_type: Any, value: Any, error: type[Exception]
) -> None:
    encode = compile_encoder(
        {"type": "record", "name": "R", "fields": [{"name": "a", "type": field_type}]}
    )
    with pytest.raises(error):
        encode({"a": value})
    with pytest.raises(TypeError, match="expected a dict"):
        encode([1])


def test_nesting_is_bounded() -> None:
    encode = compile_encoder({"type": "array", "items": {"type": "array", "items": "long"}})
    assert encode([[1], []]) == b"\x04\x02\x02\x00\x00\x00"  # 2 items: [1], []
    deep: Any = {"type": "array", "items": "long"}
    value: Any = [1]
    for _ in range(70):
        deep, value = {"type": "array", "items": deep}, [value]
    with pytest.raises(ValueError, match="deeper than 64"):
        compile_encoder(deep)(value)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "map", "values": "string"},
        ["null", "string", "long"],
        "Unknown",
        {"type": "record", "name": "Self", "fields": [{"name": "s", "type": ["null", "Self"]}]},
    ],
)
def test_a_schema_it_cannot_encode_is_refused_when_compiled(schema: Any) -> None:
    with pytest.raises(ValueError):
        compile_encoder(schema)
