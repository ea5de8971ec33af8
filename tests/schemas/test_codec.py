"""PushCodec: the spec's examples, normalisation of quirks, framing, and what is not a push."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas import CorruptRecord, NotAPush, PushCodec, SchemaError, UnknownSchema, load_push_schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
NAMES = [
    "text", "image", "audio", "video", "document", "sticker", "location",
    "unknown", "unsupported", "interactive", "contacts", "context", "forwarded",
]  # fmt: skip
RECEIVED_AT = 1_700_000_000_123
CODEC = PushCodec()


def example(name: str) -> bytes:
    return (EXAMPLES / f"{name}.json").read_bytes()


def parse(name: str) -> dict[str, Any]:
    return CODEC.parse(example(name), RECEIVED_AT)


def push(**fields: Any) -> bytes:
    return orjson.dumps({"messageId": "m-1", **fields})


def message(**fields: Any) -> dict[str, Any]:
    """The typed `message` of a push whose message object is `fields`."""
    result: dict[str, Any] = CODEC.parse(push(message=fields), 0)["message"]
    return result


def assert_typed_view(body: Any, typed: Any) -> None:
    """Every JSON value that has a typed field equals it (booleans may arrive as strings)."""
    if isinstance(body, dict):
        assert isinstance(typed, dict)
        for key, value in body.items():
            if key.strip() in typed:
                assert_typed_view(value, typed[key.strip()])
    elif isinstance(body, list):
        assert isinstance(typed, list)
        assert len(body) == len(typed)
        for value, typed_value in zip(body, typed, strict=True):
            assert_typed_view(value, typed_value)
    elif isinstance(typed, bool) and isinstance(body, str):
        assert typed is (body.lower() == "true")
    else:
        assert typed == body
        assert type(typed) is type(body)


# --- the spec's examples ----------------------------------------------------------------------


def test_there_is_one_example_file_per_spec_example() -> None:
    assert sorted(p.stem for p in EXAMPLES.glob("*.json")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_parses_to_its_typed_view(name: str) -> None:
    raw = example(name)
    record = CODEC.parse(raw, RECEIVED_AT)
    body = orjson.loads(raw)
    assert_typed_view(body, record)
    assert record["raw"] == raw
    assert record["receivedAt"] == RECEIVED_AT
    assert record["messageId"] == body["messageId"]
    assert record["timestamp"] == body["timestamp"]
    assert record["channelType"] == 0
    assert record["eventType"] == "up-message-event"
    expected_type = "text" if name in {"context", "forwarded"} else name
    assert record["message"]["type"] == expected_type


@pytest.mark.parametrize("name", NAMES)
def test_example_roundtrips_through_the_wire_format(name: str) -> None:
    record = parse(name)
    data = CODEC.encode(record)
    assert CODEC.decode(data) == record
    assert CODEC.decode(data)["raw"] == example(name)


def test_text() -> None:
    record = parse("text")
    assert record["appId"] == "TaPGlXbZ"
    assert record["businessPhone"] == "6395110022481"
    assert record["from"] == {"name": "Amanda Wan", "phone": "91856321412"}
    assert record["message"]["text"] == {"body": "prime time"}
    assert record["message"]["context"] is None
    assert record["sendNum"] is None and record["wsCode"] is None


def test_image() -> None:
    image = parse("image")["message"]["image"]
    assert image == {
        "id": "1517236555680319",
        "mimeType": "image/jpeg",
        "filePath": "filePath",
        "sha256": "OXVukVvsiD3tB+R5UXRqqMsLkocfLB1tLQyaqSsjwIE=",
        "caption": "Description",
    }


def test_audio_video_document() -> None:
    assert parse("audio")["message"]["audio"] == {
        "id": "id", "mimeType": "mimeType", "filePath": "filePath", "sha256": "sha256",
        "voice": None,
    }  # fmt: skip
    assert parse("video")["message"]["video"] == {
        "id": "id", "mimeType": "mimeType", "filePath": "filePath", "sha256": "sha256",
        "caption": "Description", "filename": "filename",
    }  # fmt: skip
    assert parse("document")["message"]["document"] == {
        "id": "id", "filePath": "filePath", "filename": "filename", "mimeType": "mimeType",
        "sha256": "sha256", "caption": "Description",
    }  # fmt: skip


def test_sticker_is_animated() -> None:
    sticker = parse("sticker")["message"]["sticker"]
    assert sticker["animated"] is True
    assert sticker["mimeType"] == "mimeType"


def test_location_keeps_name_and_address() -> None:
    location = parse("location")["message"]["location"]
    assert location == {
        "address": "5th Floor, Bantian Commercial Plaza, No. 999 Jihua Road, Shenzhen, "
        "Guangdong 518129",
        "latitude": "22.636734008789",
        "longitude": "114.05695343018",
        "name": "Southern Cinema",
        "url": None,
    }


def test_unknown_takes_its_type_from_the_top_level() -> None:
    record = parse("unknown")
    assert record["message"]["type"] == "unknown"
    assert all(v is None for k, v in record["message"].items() if k != "type")
    assert record["from"]["phone"] == "91856321412"


def test_unsupported() -> None:
    assert parse("unsupported")["message"]["unsupported"] == {
        "code": "code", "details": "details", "title": "title", "message": "message",
    }  # fmt: skip


def test_interactive_list() -> None:
    interactive = parse("interactive")["message"]["interactive"]
    assert interactive["type"] == "list"
    assert interactive["header"] == {"type": "text", "text": "The content of the header"}
    assert interactive["body"] == {"text": "The content of the main text"}
    assert interactive["footer"] == {"text": "The content of the footer"}
    action = interactive["action"]
    assert action["button"] == "Test button"
    assert action["buttons"] is None
    assert [s["title"] for s in action["sections"]] == [
        "Group header", "Group header 2", "Group header 3", "Group header 4",
    ]  # fmt: skip
    assert action["sections"][3]["rows"] == [
        {"id": "1004", "title": "Title of the row 3", "description": "Description of rows 3"}
    ]
    assert interactive["button_reply"] is None and interactive["list_reply"] is None


def test_interactive_replies_a_user_actually_sends() -> None:
    button = message(type="interactive", interactive={
        "type": "button_reply", "button_reply": {"id": "b1", "title": "Yes"},
    })["interactive"]  # fmt: skip
    assert button["type"] == "button_reply"
    assert button["button_reply"] == {"id": "b1", "title": "Yes"}
    listed = message(type="interactive", interactive={
        "type": "list_reply", "list_reply": {"id": 7, "title": "Row", "description": "d"},
    })["interactive"]  # fmt: skip
    assert listed["list_reply"] == {"id": "7", "title": "Row", "description": "d"}
    buttons = message(interactive={"action": {"buttons": [
        {"type": "reply", "reply": {"id": "1", "title": "A"}},
    ]}})["interactive"]["action"]["buttons"]  # fmt: skip
    assert buttons == [{"type": "reply", "reply": {"id": "1", "title": "A"}}]


def test_contacts() -> None:
    [contact] = parse("contacts")["message"]["contacts"]
    assert [a["type"] for a in contact["addresses"]] == ["HOME", "WORK"]
    assert contact["addresses"][0] == {
        "city": "city name", "country": "country name", "country_code": "country code",
        "state": "state name", "street": "street name", "type": "HOME", "zip": "4800000",
    }  # fmt: skip
    assert contact["birthday"] == "2000-01-01"
    assert contact["emails"][2] == {"email": "example3@gmail.com", "type": "HOME"}
    assert contact["name"] == {
        "first_name": "Aamnda", "formatted_name": "formatted name", "last_name": "Yuesa",
        "middle_name": "Ai", "prefix": "prefix", "suffix": "suffix",
    }  # fmt: skip
    assert contact["org"] == {
        "company": "CompanyName", "department": "DepartmentName", "title": "TitleName",
    }  # fmt: skip
    assert [p["type"] for p in contact["phones"]] == ["IPHONE", "CELL", "MAIN", "HOME", "WORK"]
    assert contact["phones"][0] == {
        "phone": "91856321412", "type": "IPHONE", "department": None, "wa_id": None,
    }  # fmt: skip
    assert contact["urls"][1] == {"type": "HOME", "url": "https://www.example.com/"}


def test_contact_phone_kind_under_the_tables_name() -> None:
    [contact] = message(contacts=[{"phones": [{"phone": 123, "department": "HOME"}]}])["contacts"]
    assert contact["phones"] == [
        {"phone": "123", "type": None, "department": "HOME", "wa_id": None}
    ]


def test_context() -> None:
    record = parse("context")
    assert record["message"]["context"] == {
        "from": "8615503400098",
        "id": "936cfad865474c19a6bdbabef434aat6",
        "forwarded": None,
        "frequently_forwarded": None,
        "referred_product": None,
    }
    assert record["message"]["text"] == {"body": "Message content"}
    assert record["sendNum"] == 1
    assert record["wsCode"] == "chendalong"


def test_forwarded_string_booleans_and_key_with_trailing_space() -> None:
    context = parse("forwarded")["message"]["context"]
    assert context["forwarded"] is True
    assert context["frequently_forwarded"] is True
    assert context["from"] == "WABAID"
    assert context["id"] == "messege.ID"
    assert context["referred_product"] == {
        "catalog_id": "CATALOG_ID", "product_retailer_id": "PRODUCT_ID",
    }  # fmt: skip


# --- normalisation ----------------------------------------------------------------------------


def test_numbers_where_strings_belong_become_strings() -> None:
    record = CODEC.parse(push(
        messageId=123456789, businessPhone=6395110022481, appId=1.5,
        **{"from": {"phone": 91856321412.0, "name": 7}},
        message={"location": {"latitude": 22.636734008789, "longitude": -114}},
    ), 0)  # fmt: skip
    assert record["messageId"] == "123456789"
    assert record["businessPhone"] == "6395110022481"
    assert record["appId"] == "1.5"
    assert record["from"] == {"phone": "91856321412", "name": "7"}
    assert record["message"]["location"]["latitude"] == "22.636734008789"
    assert record["message"]["location"]["longitude"] == "-114"


@pytest.mark.parametrize(
    ("sent", "typed"),
    [
        ("1693396796", 1693396796),
        (" 1693396796 ", 1693396796),
        ("+01693396796", 1693396796),
        (1693396796.0, 1693396796),
        ("1693396796.5", None),
        ("16933967x6", None),
        ("", None),
        (True, None),
        ({"s": 1}, None),
        (2**63, None),
        ("9" * 40, None),
        (-(2**63), -(2**63)),
    ],
)
def test_timestamp_normalisation(sent: Any, typed: int | None) -> None:
    assert CODEC.parse(push(timestamp=sent), 0)["timestamp"] == typed


@pytest.mark.parametrize(("sent", "typed"), [("0", 0), (" 1 ", 1), (2**31, None), ("x", None)])
def test_int_fields_normalisation(sent: Any, typed: int | None) -> None:
    record = CODEC.parse(push(channelType=sent, sendNum=sent), 0)
    assert record["channelType"] == typed
    assert record["sendNum"] == typed


@pytest.mark.parametrize(
    ("sent", "typed"),
    [
        (True, True), (False, False), ("true", True), ("TRUE", True), (" False ", False),
        ("1", True), ("0", False), (1, True), (0, False), ("yes", None), (2, None),
        ("", None), (None, None), ([True], None),
    ],
)  # fmt: skip
def test_boolean_normalisation(sent: Any, typed: bool | None) -> None:
    assert message(sticker={"animated": sent})["sticker"]["animated"] is typed
    assert message(context={"forwarded": sent})["context"]["forwarded"] is typed


def test_exact_key_wins_over_a_key_with_stray_spaces() -> None:
    context = message(context={" forwarded": "false", "forwarded": "true", " id ": "x"})["context"]
    assert context["forwarded"] is True
    assert context["id"] == "x"


def test_error_details_object_is_kept_as_json_text() -> None:
    unknown = message(type="unknown", unknown={"code": 131051, "details": {"why": ["x", 1]}})
    assert unknown["unknown"]["code"] == "131051"
    assert orjson.loads(unknown["unknown"]["details"]) == {"why": ["x", 1]}
    assert message(unsupported={"details": [1, 2]})["unsupported"]["details"] == "[1,2]"
    assert message(unsupported={"details": None})["unsupported"]["details"] is None


def test_unknown_message_type_flows_through() -> None:
    raw = push(message={"type": "poll_vote", "poll_vote": {"option": 2, "poll_id": "x"}})
    record = CODEC.parse(raw, 0)
    assert record["message"]["type"] == "poll_vote"
    assert all(v is None for k, v in record["message"].items() if k != "type")
    assert record["raw"] == raw
    assert CODEC.decode(CODEC.encode(record)) == record


def test_top_level_type_fills_a_message_without_type_but_never_overrides_one() -> None:
    assert CODEC.parse(push(type="unknown", message={}), 0)["message"]["type"] == "unknown"
    assert CODEC.parse(push(type="unknown", message="junk"), 0)["message"]["type"] == "unknown"
    record = CODEC.parse(push(type="unknown", message={"type": "text"}), 0)
    assert record["message"]["type"] == "text"
    assert CODEC.parse(push(), 0)["message"] is None
    assert CODEC.parse(push(type=["x"]), 0)["message"] is None


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"from": "91856321412"}, ("from",)),
        ({"from": ["x"]}, ("from",)),
        ({"message": "hello"}, ("message",)),
        ({"message": {"contacts": {"name": {}}}}, ("message", "contacts")),
        ({"message": {"text": "hello"}}, ("message", "text")),
        ({"message": {"location": [1, 2]}}, ("message", "location")),
        ({"message": {"text": {"body": {"nested": True}}}}, ("message", "text", "body")),
        ({"message": {"context": {"referred_product": 5}}},
         ("message", "context", "referred_product")),
        ({"message": {"interactive": {"action": {"sections": "x"}}}},
         ("message", "interactive", "action", "sections")),
        ({"appId": True}, ("appId",)),
        ({"appId": None}, ("appId",)),
    ],
)  # fmt: skip
def test_wrong_shapes_become_null(fields: dict[str, Any], path: tuple[str, ...]) -> None:
    record = CODEC.parse(push(**fields), 0)
    value: Any = record
    for key in path:
        value = value[key]
    assert value is None
    assert CODEC.decode(CODEC.encode(record)) == record


def test_array_items_of_the_wrong_shape_are_left_out_of_the_typed_view() -> None:
    contacts = message(contacts=["junk", {"birthday": "2000-01-01"}, None, 3])["contacts"]
    assert [c["birthday"] for c in contacts] == ["2000-01-01"]


def test_body_keys_cannot_override_ingress_fields() -> None:
    raw = push(raw="forged", receivedAt=1)
    record = CODEC.parse(raw, RECEIVED_AT)
    assert record["raw"] == raw
    assert record["receivedAt"] == RECEIVED_AT


# --- bodies orjson refuses but which are still JSON -------------------------------------------


def test_utf8_bom_is_tolerated() -> None:
    raw = b"\xef\xbb\xbf" + example("text")
    record = CODEC.parse(raw, 0)
    assert record["message"]["text"]["body"] == "prime time"
    assert record["raw"] == raw


def test_escaped_lone_surrogates_become_replacement_characters() -> None:
    raw = b'{"messageId": "m\\ud800", "from": {"name": "a\\udc00b", "phone": "1"}, "x\\ud800": 1}'
    record = CODEC.parse(raw, 0)
    assert record["messageId"] == "m\ufffd"
    assert record["from"]["name"] == "a\ufffdb"
    assert CODEC.decode(CODEC.encode(record)) == record


def test_numbers_beyond_a_double_are_tolerated() -> None:
    record = CODEC.parse(b'{"messageId": "m", "timestamp": 1e400, "appId": 1e400}', 0)
    assert record["timestamp"] is None
    assert record["appId"] == "inf"


# --- what is not a push -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "body is empty"),
        (b" \r\n\t", "body is empty"),
        (b'{"messageId": "\xff"}', "body is not valid UTF-8"),
        (b"\xc3\x28", "body is not valid UTF-8"),
        (b'{"messageId": "m",', "body is not JSON: "),
        (b"messageId=m", "body is not JSON: "),
        (b'{"messageId": NaN}', "body is not JSON: "),
        (b'[{"messageId": "m"}]', "body is a JSON array, not an object"),
        (b'"m"', "body is a JSON string, not an object"),
        (b"42", "body is a JSON number, not an object"),
        (b"null", "body is a JSON null, not an object"),
        (b"{}", "messageId is missing"),
        (b'{"message": {"messageId": "m"}}', "messageId is missing"),
        (b'{"messageId": null}', "messageId is null"),
        (b'{"messageId": ""}', "messageId is empty"),
        (b'{"messageId": " \\t"}', "messageId is empty"),
        (b'{"messageId ": ""}', "messageId is empty"),
        (b'{"messageId": true}', "messageId is a JSON boolean, not a string or number"),
        (b'{"messageId": {"id": "m"}}', "messageId is a JSON object, not a string or number"),
        (b'{"messageId": ["m"]}', "messageId is a JSON array, not a string or number"),
    ],
)
def test_not_a_push(raw: bytes, reason: str) -> None:
    with pytest.raises(NotAPush) as caught:
        CODEC.parse(raw, 0)
    assert caught.value.reason.startswith(reason)
    assert str(caught.value) == caught.value.reason
    assert isinstance(caught.value, SchemaError)


def test_message_id_number_and_stray_spaces_are_usable() -> None:
    assert CODEC.parse(b'{"messageId": 42}', 0)["messageId"] == "42"
    assert CODEC.parse(b'{" messageId ": "m"}', 0)["messageId"] == "m"


# --- framing ----------------------------------------------------------------------------------


def test_header_is_marker_then_little_endian_fingerprint() -> None:
    data = CODEC.encode(parse("text"))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == CODEC.fingerprint
    assert len(CODEC.fingerprint) == 8
    assert CODEC.header == data[:10]


def test_default_schema_is_the_shipped_avsc() -> None:
    explicit = PushCodec(load_push_schema())
    assert explicit.fingerprint == CODEC.fingerprint
    assert CODEC.schema["name"] == "dev.uplink.Push"


def test_decode_rejects_other_framings() -> None:
    data = CODEC.encode(parse("text"))
    with pytest.raises(UnknownSchema) as no_marker:
        CODEC.decode(b"\x00" + data[1:])
    assert no_marker.value.fingerprint is None
    other = bytes(8 * [0xAB])
    with pytest.raises(UnknownSchema) as unknown:
        CODEC.decode(data[:2] + other + data[10:])
    assert unknown.value.fingerprint == other
    with pytest.raises(UnknownSchema):
        CODEC.decode(b"")


def test_decode_rejects_corrupt_datums() -> None:
    data = CODEC.encode(parse("contacts"))
    with pytest.raises(CorruptRecord):
        CODEC.decode(data[:-5])
    with pytest.raises(CorruptRecord):
        CODEC.decode(data + b"\x00")
    with pytest.raises(CorruptRecord):
        CODEC.decode(CODEC.header)


def test_heads_of_a_batch_name_why_a_value_has_none() -> None:
    data = CODEC.encode(parse("text"))
    ids, stamps, failed = CODEC.heads([None, data, b"\x00" + data[1:], data[:13], data])
    assert list(zip(ids, stamps, strict=True)) == [CODEC.head(data)] * 2
    assert [index for index, _ in failed] == [0, 2, 3]
    [none, other, cut] = [why for _, why in failed]
    assert none == "no value"
    assert other == (
        f"unknown writer schema: registry id {int.from_bytes(data[1:5], 'big')} "
        "(no schema registry configured: set UPLINK_SCHEMA_REGISTRY_URL)"
    )
    assert cut == "undecodable datum head: the datum ends inside appId"


def test_a_schema_laid_out_otherwise_reads_heads_by_decoding() -> None:
    schema = load_push_schema()
    fields = schema["fields"]
    schema = {**schema, "fields": [fields[2], *fields[:2], *fields[3:]]}  # messageId first
    codec = PushCodec(schema)
    data = codec.encode(codec.parse(example("text"), 0))
    record = codec.decode(data)
    ids, stamps, failed = codec.heads([data, None, data[:12]])
    assert (ids, stamps) == ([record["messageId"]], [record["timestamp"]])
    assert [index for index, _ in failed] == [1, 2]
    [none, cut] = [why for _, why in failed]
    assert none == "no value"
    assert cut.startswith("undecodable datum")


def test_decode_accepts_memoryview() -> None:
    record = parse("image")
    assert CODEC.decode(memoryview(CODEC.encode(record))) == record


# --- key --------------------------------------------------------------------------------------


def test_key_is_the_conversation() -> None:
    assert PushCodec.key(parse("text")) == b"6395110022481:91856321412"
    assert PushCodec.key(CODEC.parse(push(businessPhone="1"), 0)) == b"1:"
    assert PushCodec.key(CODEC.parse(push(**{"from": {"phone": "2"}}), 0)) == b":2"
    assert PushCodec.key(CODEC.parse(push(**{"from": {"name": "x"}}), 0)) == b":"
    assert PushCodec.key(CODEC.parse(push(businessPhone="ü"), 0)) == "ü:".encode()


# --- the converter is driven by whatever schema the codec is given ----------------------------

MINIMAL = [
    {"name": "messageId", "type": "string"},
    {"name": "raw", "type": "bytes"},
    {"name": "receivedAt", "type": "long"},
]


def test_a_custom_schema_gets_its_own_typed_view() -> None:
    codec = PushCodec({
        "type": "record", "name": "P", "fields": [
            *MINIMAL,
            {"name": "n", "type": ["null", "int"], "default": None},
            {"name": "r", "type": ["null", {"type": "record", "name": "R", "fields": [
                {"name": "s", "type": ["null", "string"], "default": None},
            ]}], "default": None},
            {"name": "rs", "type": ["null", {"type": "array", "items": "R"}], "default": None},
        ],
    })  # fmt: skip
    record = codec.parse(b'{"messageId": 1, "n": "7", "r": {"s": 2}, "rs": [{"s": "x"}]}', 5)
    assert {k: record[k] for k in ("messageId", "n", "r", "rs")} == {
        "messageId": "1", "n": 7, "r": {"s": "2"}, "rs": [{"s": "x"}],
    }  # fmt: skip
    assert codec.decode(codec.encode(record)) == record
    assert codec.fingerprint != CODEC.fingerprint


@pytest.mark.parametrize(
    "field_type",
    [
        ["null", {"type": "map", "values": "string"}],
        ["null", "string", "int"],
        ["null", "Missing"],
        ["null", "double"],
    ],
)
def test_a_schema_without_a_json_view_is_refused_up_front(field_type: Any) -> None:
    fields = [*MINIMAL, {"name": "x", "type": field_type, "default": None}]
    with pytest.raises(ValueError):  # from the compiler, or fastavro's UnknownType
        PushCodec({"type": "record", "name": "P", "fields": fields})


def test_heads_read_both_framings_of_every_known_writer_however_many() -> None:
    codec = PushCodec()
    single_object = CODEC.encode(parse("text"))
    datum = single_object[10:]
    for schema_id in range(100):  # a registry with many ids: each is a header the C reader tries
        codec.writers.add(schema_id, codec.text)
    assert len(codec.writers.head_headers) > 100
    values = [single_object, b"\x00\x00\x00\x00\x63" + datum, b"\x00\x00\x00\x00\x64" + datum]
    ids, stamps, failed = codec.heads(values)
    assert list(zip(ids, stamps, strict=True)) == [CODEC.head(single_object)] * 2
    assert failed == [
        (
            2,
            "unknown writer schema: registry id 100 "
            "(no schema registry configured: set UPLINK_SCHEMA_REGISTRY_URL)",
        )
    ]
    assert codec.decode(values[1]) == CODEC.decode(single_object)
