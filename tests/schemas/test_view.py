"""Views: the chosen fields of a record, read without decoding the rest, equal the decoded ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.router.rules import VIEW
from schemas import CorruptRecord, MediaCodec, PushCodec, UnknownSchema, load_push_schema
from schemas.framing import HEADER_SIZE
from schemas.view import Shape, compile_view
from tests.schemas.test_properties import EXAMPLES, SETTINGS, message_ids, push_like

CODEC = PushCodec()
# Every field, read whole: the view must then be the decoded record itself.
WHOLE: Shape = {field["name"]: True for field in load_push_schema()["fields"]}
SHAPES: list[Shape] = [
    VIEW,
    WHOLE,
    {"messageId": True},
    {"raw": True},  # the last field: every other one stepped over
    {"message": {"contacts": True, "context": {"referred_product": True}}},
    {"message": {"interactive": {"action": {"sections": True}}}, "receivedAt": True},
    {"from": {}, "message": {"location": {}, "unknown": True, "unsupported": {}}},
]


def projected(value: Any, shape: Shape | bool) -> Any:
    """What the view of ``shape`` must be: the decoded record with only the shape's fields."""
    if value is None or shape is True:
        return value
    assert isinstance(shape, dict)
    return {name: projected(value[name], inner) for name, inner in shape.items()}


def encoded(path: Path) -> bytes:
    return CODEC.encode(CODEC.parse(path.read_bytes(), 1_700_000_000_000))


@pytest.mark.parametrize("shape", SHAPES, ids=range(len(SHAPES)))
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_the_view_of_every_example_is_the_decoded_record_projected(
    example: Path, shape: Shape
) -> None:
    data = encoded(example)
    assert CODEC.viewer(shape)(data) == projected(CODEC.decode(data), shape)


def test_a_view_of_every_field_is_the_decoded_record() -> None:
    for example in EXAMPLES:
        data = encoded(example)
        assert CODEC.viewer(WHOLE)(data) == CODEC.decode(data)


@SETTINGS
@given(body=push_like, message_id=message_ids, shape=st.sampled_from(SHAPES))
def test_any_push_is_viewed_as_it_decodes(
    body: dict[str, Any], message_id: str | int, shape: Shape
) -> None:
    import json

    body["messageId"] = message_id
    data = CODEC.encode(CODEC.parse(json.dumps(body).encode(), 0))
    assert CODEC.viewer(shape)(data) == projected(CODEC.decode(data), shape)


@SETTINGS
@given(datum=st.binary(max_size=300), example=st.sampled_from(EXAMPLES))
def test_any_datum_is_viewed_or_is_corrupt(datum: bytes, example: Path) -> None:
    view = CODEC.viewer(WHOLE)
    data = encoded(example)
    for candidate in (CODEC.header + datum, data[: HEADER_SIZE + len(datum) % (len(data) - 9)]):
        try:
            record = CODEC.decode(candidate)
        except CorruptRecord:
            record = None
        try:
            viewed = view(candidate)
        except CorruptRecord:
            # The view may refuse more (an implausible array count) but never accepts less.
            continue
        if record is not None:
            assert viewed == record


def test_a_truncated_record_is_corrupt() -> None:
    data = encoded(EXAMPLES[0])
    for end in (HEADER_SIZE, HEADER_SIZE + 3, len(data) - 1):
        with pytest.raises(CorruptRecord):
            CODEC.viewer(WHOLE)(data[:end])


def test_a_record_of_another_schema_is_refused() -> None:
    other = MediaCodec().header + b"\x00" * 40
    with pytest.raises(UnknownSchema):
        CODEC.viewer(VIEW)(other)


def test_the_view_stops_after_the_last_field_it_needs() -> None:
    data = encoded(EXAMPLES[0])
    # Garbage after `messageId` is not read: the view does not validate the whole datum.
    head = CODEC.viewer({"messageId": True})
    cut = data.index(CODEC.decode(data)["messageId"].encode()) + 32
    assert head(data[:cut] + b"\xff" * 8) == {"messageId": CODEC.decode(data)["messageId"]}


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ({"nope": True}, "Push has no field ['nope']"),
        ({"message": {"text": {"bodee": True}}}, "Text has no field ['bodee']"),
        ({"messageId": {"x": True}}, "a shape {'x': True} for a string"),
        ({}, "an empty shape"),
    ],
)
def test_a_shape_naming_what_the_schema_lacks_fails_when_compiled(
    shape: Shape, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        compile_view(load_push_schema(), shape)


V2 = json.loads(Path(__file__).parent.joinpath("evolution", "push-v2.avsc").read_text())


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_a_view_reads_confluent_framing_and_other_writers_as_its_own(path: Path) -> None:
    codec = PushCodec()
    view = codec.viewer(VIEW)
    single_object = codec.encode(codec.parse(path.read_bytes(), 1))
    expected = projected(codec.decode(single_object), VIEW)
    codec.frame_with(7)  # as a registration does
    confluent = codec.encode(codec.parse(path.read_bytes(), 1))
    assert confluent[:5] == b"\x00\x00\x00\x00\x07"
    assert view(confluent) == view(single_object) == expected
    # A newer writer's record: decoded whole (resolved into this schema), which reads the same.
    v2 = PushCodec(V2)
    newer = v2.encode({**v2.parse(path.read_bytes(), 1), "deliveredVia": "edge-7"})
    codec.writers.add(8, v2.text)
    newer_confluent = b"\x00\x00\x00\x00\x08" + newer[10:]
    # That writer (v1 and a field) has no `source` (push.avsc v2's): it reads as the default.
    older_source = {**expected, "source": None}
    assert projected(view(newer), VIEW) == projected(view(newer_confluent), VIEW) == older_source
