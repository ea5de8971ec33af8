"""Meta's webhook → records: the mapping's quirks, without a broker (tests/ingress has the rest)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas import PushCodec
from schemas.meta import MetaEventCodec, MetaWebhook, NotAWebhook, StatusCodec

PUSHES, STATUSES, EVENTS = PushCodec(), StatusCodec(), MetaEventCodec()
WEBHOOK = MetaWebhook(PUSHES, STATUSES)


def post(value: dict[str, Any], field: str = "messages") -> bytes:
    change = {"field": field, "value": value}
    return orjson.dumps(
        {"object": "whatsapp_business_account", "entry": [{"id": "9", "changes": [change]}]}
    )


def one(message: dict[str, Any], **value: Any) -> dict[str, Any]:
    [record] = WEBHOOK.parse(post({"messages": [message], **value}), 7).messages
    assert PUSHES.decode(PUSHES.encode(record)) == record  # every typed value fits the schema
    return record


def test_the_name_of_a_lone_contact_without_wa_id_is_the_senders() -> None:
    record = one({"id": "w", "from": "1"}, contacts=[{"profile": {"name": "Ann"}}])
    assert record["from"] == {"phone": "1", "name": "Ann"}
    several = [{"profile": {"name": "A"}, "wa_id": "2"}, {"profile": {"name": "B"}, "wa_id": "3"}]
    assert one({"id": "w", "from": "1"}, contacts=several)["from"]["name"] is None


def test_quirky_values_are_typed_best_effort_and_never_rejected() -> None:
    record = one(
        {"id": 12345, "from": 15551234, "timestamp": "soon", "type": "location",
         "location": {"latitude": 1.5, "longitude": "x", "name": ["not", "text"]}},
        metadata={"display_phone_number": 15550001111, "phone_number_id": 42},
    )  # fmt: skip
    assert (record["messageId"], record["from"]["phone"]) == ("12345", "15551234")
    assert record["timestamp"] is None and record["businessPhone"] == "15550001111"
    assert record["meta"]["phoneNumberId"] == "42"
    assert record["message"]["location"] == {
        "latitude": "1.5", "longitude": "x", "name": None, "address": None, "url": None,
    }  # fmt: skip


def test_a_type_the_schema_does_not_know_keeps_its_name_and_raw() -> None:
    record = one({"id": "w", "from": "1", "type": "poll_vote", "poll_vote": {"option": 1}})
    assert record["message"]["type"] == "poll_vote"
    assert orjson.loads(record["raw"])["entry"][0]["changes"][0]["value"]["messages"][0][
        "poll_vote"
    ] == {"option": 1}


def test_positions_count_entries_changes_and_events() -> None:
    value = {"messages": [{"id": "a", "from": "1"}, {"id": "b", "from": "1"}]}
    changes = [{"field": "x", "value": {}}, {"field": "messages", "value": value}]
    body = orjson.dumps(
        {"entry": [
            {"id": "w1", "changes": [{"field": "account_update", "value": {}}]},
            {"id": "w2", "changes": changes},
        ]}
    )  # fmt: skip
    webhook = WEBHOOK.parse(body, 0)
    positions = [(m["messageId"], *(m["meta"][k] for k in ("entry", "change", "index")))
                 for m in webhook.messages]  # fmt: skip
    assert positions == [("a", 1, 1, 0), ("b", 1, 1, 1)]
    assert [(e["field"], e["meta"]["wabaId"]) for e in webhook.events] == [
        ("account_update", "w1"), ("x", "w2"),
    ]  # fmt: skip
    assert len(webhook) == 4
    assert all(e["meta"]["object"] is None for e in webhook.events)  # no `object` in this body


def test_an_empty_entry_list_is_a_webhook_with_nothing_in_it() -> None:
    assert len(WEBHOOK.parse(b'{"object": "whatsapp_business_account", "entry": []}', 0)) == 0


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b'"entry"', b'{"entry": {}}', b'{"entry": [[]]}', b'{"entry": [{"changes": [1]}]}'],
)
def test_what_is_not_a_webhook_says_why(body: bytes) -> None:
    with pytest.raises(NotAWebhook) as raised:
        WEBHOOK.parse(body, 0)
    assert raised.value.reason
