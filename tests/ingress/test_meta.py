"""``/v1/meta``: Meta's handshake, signatures, a record per event, 200 only when all are in."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import uuid
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.runtime import Handler, Inbound, Positions, Worker
from ingress.app import create_app
from schemas import PushCodec
from schemas.meta import MetaEventCodec, StatusCodec
from tests.conftest import EXAMPLES, SERVERS, Reader, Server, wait_ready
from tests.consumers.conftest import ensure_worker_topics
from uplink.registry.client import SchemaRegistry, subject
from uplink.settings import (
    IngressSettings,
    MetaSettings,
    RegistrySettings,
    Secret,
    WorkerSettings,
)

pytestmark = pytest.mark.anyio

META_EXAMPLES = EXAMPLES / "meta"
SECRET, OLD_SECRET, TOKEN = "app-secret-new", "app-secret-old", "verify-me"
PUSHES, STATUSES, EVENTS = PushCodec(), StatusCodec(), MetaEventCodec()
# Message types with a typed object of their own in the push schema (text → message.text, ...).
TYPED = {
    "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
    "interactive", "button", "reaction", "order", "system", "unsupported", "unknown",
}  # fmt: skip


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"x-hub-signature-256": signature(body, secret), "content-type": "application/json"}


def meta_settings(settings: IngressSettings, **overrides: Any) -> IngressSettings:
    meta = MetaSettings(
        verify_token=Secret(TOKEN), app_secrets=(Secret(SECRET), Secret(OLD_SECRET))
    )
    return dataclasses.replace(settings, meta=meta, **overrides)


@pytest.fixture
async def ingress(serve: Server, ingress_settings: IngressSettings) -> str:
    url = await serve(create_app(meta_settings(ingress_settings)))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
    return url


def events_at(body: bytes, meta: dict[str, Any], kind: str) -> Any:
    """The event a record's position points at, in its raw POST."""
    change = orjson.loads(body)["entry"][meta["entry"]]["changes"][meta["change"]]
    return change["value"] if kind == "event" else change["value"][kind][meta["index"]]


def test_every_type_of_metas_reference_has_an_example() -> None:
    names = {path.stem for path in META_EXAMPLES.glob("*.json")}
    assert names >= {
        "text", "image", "video", "audio", "document", "sticker", "location", "contacts",
        "interactive_button_reply", "interactive_list_reply", "button", "reaction", "order",
        "forwarded", "frequently_forwarded", "referred_product", "unsupported", "unknown",
        "system", "status_sent", "status_delivered", "status_read", "status_failed",
        "account_update", "message_template_status_update", "several",
    }, names  # fmt: skip


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_the_handshake_echoes_the_challenge_only_for_our_token(ingress: str) -> None:
    async with httpx.AsyncClient() as client:

        async def hub(**params: str) -> httpx.Response:
            return await client.get(
                f"{ingress}/v1/meta", params={f"hub.{k}": v for k, v in params.items()}
            )

        ok = await hub(mode="subscribe", verify_token=TOKEN, challenge="1158201444")
        assert (ok.status_code, ok.text) == (200, "1158201444")
        assert ok.headers["content-type"].startswith("text/plain")
        for wrong in (
            {"mode": "subscribe", "verify_token": TOKEN + "x", "challenge": "1"},
            {"mode": "subscribe", "verify_token": "", "challenge": "1"},
            {"mode": "unsubscribe", "verify_token": TOKEN, "challenge": "1"},
            {"mode": "subscribe", "verify_token": TOKEN},
        ):
            refused = await hub(**wrong)
            assert refused.status_code == 403, wrong
            assert "1" not in refused.text


async def test_the_route_is_not_served_without_an_app_secret(
    serve: Server, ingress_settings: IngressSettings
) -> None:
    url = await serve(create_app(ingress_settings))
    body = (META_EXAMPLES / "text.json").read_bytes()
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
        assert (await client.post(f"{url}/v1/meta", content=body)).status_code == 404
        assert (await client.get(f"{url}/v1/meta")).status_code == 404
        assert (await client.post(f"{url}/v1/uplink", content=b"{}")).status_code == 400


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_missing_or_wrong_signatures_get_401_and_are_not_kept_a_rotated_one_is_accepted(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    body = (META_EXAMPLES / "text.json").read_bytes()
    tampered = body.replace(b"another color", b"another colour")
    async with httpx.AsyncClient() as client:
        for headers, reason in [
            ({}, "missing"),
            ({"x-hub-signature-256": signature(body, "not-our-secret")}, "does not match"),
            ({"x-hub-signature-256": signature(body)[7:]}, "not sha256="),
            ({"x-hub-signature-256": "sha1=" + signature(body)[7:]}, "not sha256="),
        ]:
            response = await client.post(f"{ingress}/v1/meta", content=body, headers=headers)
            assert response.status_code == 401, headers
            assert reason in response.json()["reason"]
        response = await client.post(f"{ingress}/v1/meta", content=tampered, headers=signed(body))
        assert response.status_code == 401
        # Both secrets of a rotation are good; upper-case hex too.
        for secret in (OLD_SECRET, SECRET):
            headers = {"x-hub-signature-256": signature(body, secret).upper().replace("SHA", "sha")}
            response = await client.post(f"{ingress}/v1/meta", content=body, headers=headers)
            assert response.status_code == 200, response.text
    topics = ingress_settings.topics
    assert await read_records(topics.quarantine) == []
    kept = await read_records(topics.messages)
    assert [PUSHES.decode(r.value or b"")["raw"] for r in kept] == [body, body]


async def test_every_example_becomes_one_record_per_event_that_keeps_the_post(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    expected = {"messages": 0, "statuses": 0, "events": 0}
    async with httpx.AsyncClient() as client:
        for path in sorted(META_EXAMPLES.glob("*.json")):
            body = path.read_bytes()
            response = await client.post(f"{ingress}/v1/meta", content=body, headers=signed(body))
            assert response.status_code == 200, (path.name, response.text)
            value = orjson.loads(body)["entry"][0]["changes"][0]["value"]
            counts = response.json()
            assert counts["messages"] == len(value.get("messages", []))
            assert counts["statuses"] == len(value.get("statuses", []))
            for kind in expected:
                expected[kind] += counts[kind]
        metrics = (await client.get(f"{ingress}/metrics")).text
    assert expected == {"messages": 24, "statuses": 5, "events": 3}
    for kind, count in (("message", 24), ("status", 5), ("event", 3)):
        assert f'uplink_ingress_meta_records_total{{kind="{kind}"}} {count}.0' in metrics
    topics = ingress_settings.topics

    messages = await read_records(topics.messages, expected["messages"])
    for record in messages:
        push = PUSHES.decode(record.value or b"")
        original = events_at(push["raw"], push["meta"], "messages")
        value = orjson.loads(push["raw"])["entry"][0]["changes"][0]["value"]
        assert push["source"] == "meta"
        assert push["messageId"] == original["id"]
        assert push["timestamp"] == int(original["timestamp"])
        assert push["businessPhone"] == value["metadata"]["display_phone_number"]
        assert push["meta"]["phoneNumberId"] == value["metadata"]["phone_number_id"]
        assert push["meta"]["wabaId"] == "102290129340398"
        assert push["from"]["phone"] == original["from"]
        names = {c["wa_id"]: c["profile"]["name"] for c in value.get("contacts", [])}
        assert push["from"]["name"] == names.get(original["from"])
        kind = original["type"]
        assert push["message"]["type"] == kind
        assert kind in TYPED and push["message"][kind] is not None, kind
        assert record.key == f"{push['businessPhone']}:{original['from']}".encode()
        assert PUSHES.encode(push) == record.value  # the record is what the ingress encoded

    by_id = {
        PUSHES.decode(r.value or b"")["messageId"]: PUSHES.decode(r.value or b"") for r in messages
    }
    image = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQIMAGE"]["message"]["image"]
    assert image == {
        "filePath": None, "mimeType": "image/jpeg", "id": "1003383421387256",
        "sha256": "81d3bd8a8db4868c9520ed47186e8b7c5789e61ff79f7f834be6950b808a90d3",
        "caption": "Our new shoes",
    }  # fmt: skip
    location = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQLOCATION"]["message"]["location"]
    assert (location["latitude"], location["longitude"]) == ("37.483307", "-122.148981")
    assert location["url"] == "https://philzcoffee.com"
    assert by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQAUDIO"]["message"]["audio"]["voice"] is True
    context = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQFREQFORWARDED"]["message"]["context"]
    assert context["frequently_forwarded"] is True
    assert by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQFORWARDED"]["message"]["context"]["forwarded"]
    product = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQPRODUCTENQUIRY"]["message"]["context"]
    assert product["referred_product"] == {
        "catalog_id": "194836987003835", "product_retailer_id": "di9ozbzfi4",
    }  # fmt: skip
    order = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQORDER"]["message"]["order"]
    items = [
        (i["product_retailer_id"], i["quantity"], i["item_price"]) for i in order["product_items"]
    ]
    assert items == [("di9ozbzfi4", 2, "30"), ("nlr4ccp0zz", 1, "12.5")]
    unsupported = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQUNSUPPORTED"]["message"]
    assert unsupported["unsupported"]["code"] == "131051"
    assert unsupported["unsupported"]["details"] == "Message type is currently not supported."
    assert unsupported["errors"] == [unsupported["unsupported"]]
    reply = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQLISTREPLY"]["message"]["interactive"]
    assert reply["list_reply"]["id"] == "priority-express"
    flow = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQNFMREPLY"]["message"]["interactive"]
    assert orjson.loads(flow["nfm_reply"]["response_json"])["rating"] == "5"
    button = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQBUTTON"]["message"]["button"]
    assert button == {"payload": "Unsubscribe", "text": "Stop promotions"}
    reaction = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQREACTION"]["message"]["reaction"]
    assert reaction["emoji"] == "\U0001f44d"
    referral = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQREFERRAL"]["message"]["referral"]
    assert referral["source_type"] == "ad" and referral["ctwa_clid"].startswith("Aff-")
    system = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQSYSTEM"]["message"]["system"]
    assert system["type"] == "user_changed_number" and system["wa_id"] == "16505559999"
    phones = by_id["wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQCONTACTS"]["message"]["contacts"][0]["phones"]
    assert phones == [
        {"phone": "+1 (940) 555-1234", "type": "HOME", "department": None, "wa_id": "19405551234"}
    ]

    statuses = [STATUSES.decode(r.value or b"") for r in await read_records(topics.statuses, 5)]
    by_state = {s["status"]: s for s in statuses if s["recipient_id"] == "16505551234"}
    assert set(by_state) == {"sent", "delivered", "read", "failed"}
    for status in statuses:
        original = events_at(status["raw"], status["meta"], "statuses")
        assert status["eventId"] == f"{original['id']}:{original['status']}:{original['timestamp']}"
        assert (status["id"], status["timestamp"]) == (original["id"], int(original["timestamp"]))
        assert status["businessPhone"] == "15550783881"
    sent = by_state["sent"]
    assert sent["conversation"] == {
        "id": "CONVERSATION_ID_6d5e7c", "expiration_timestamp": 1750350173,
        "origin": {"type": "service"},
    }  # fmt: skip
    assert sent["pricing"] == {
        "billable": True, "pricing_model": "PMP", "type": "regular", "category": "service",
    }  # fmt: skip
    assert sent["biz_opaque_callback_data"] == "order-7"
    [error] = by_state["failed"]["errors"]
    assert error["code"] == "131049" and error["details"].startswith("In order to maintain")
    assert error["href"].startswith("https://developers.facebook.com/")

    events = [EVENTS.decode(r.value or b"") for r in await read_records(topics.meta_events, 3)]
    assert sorted(e["field"] for e in events) == [
        "account_update", "message_template_status_update", "messages",
    ]  # fmt: skip
    for event in events:
        assert orjson.loads(event["value"]) == events_at(event["raw"], event["meta"], "event")
    [errors] = [e for e in events if e["field"] == "messages"]
    assert orjson.loads(errors["value"])["errors"][0]["code"] == 131054
    [account] = [e for e in events if e["field"] == "account_update"]
    assert account["time"] == 1750275999


async def test_several_messages_and_statuses_of_one_post_each_get_their_record(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    body = (META_EXAMPLES / "several.json").read_bytes()
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{ingress}/v1/meta", content=body, headers=signed(body))
    assert response.json() == {"messages": 3, "statuses": 1, "events": 0}
    records = await read_records(ingress_settings.topics.messages, 3)
    pushes = sorted(
        (PUSHES.decode(r.value or b"") for r in records), key=lambda p: p["meta"]["index"]
    )
    assert [p["meta"]["index"] for p in pushes] == [0, 1, 2]
    assert [(p["from"]["phone"], p["from"]["name"]) for p in pushes] == [
        ("16505551234", "Sheena Nelson"), ("16315551181", "Kerry Fisher"),
        ("16505551234", "Sheena Nelson"),
    ]  # fmt: skip
    assert [p["message"]["type"] for p in pushes] == ["text", "text", "image"]
    assert all(p["raw"] == body for p in pushes)
    [status] = await read_records(ingress_settings.topics.statuses, 1)
    assert status.key == b"15550783881:16505551234"
    assert STATUSES.decode(status.value or b"")["status"] == "read"


async def test_an_unknown_field_is_kept_in_the_events_topic(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    value = {"anything": ["Meta", "adds", 1], "later": {"nested": True}}
    body = orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "42",
                    "time": 1750000000,
                    "changes": [{"field": "brand_new", "value": value}],
                }
            ],
        }
    )
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{ingress}/v1/meta", content=body, headers=signed(body))
    assert response.json() == {"messages": 0, "statuses": 0, "events": 1}
    [record] = await read_records(ingress_settings.topics.meta_events, 1)
    event = EVENTS.decode(record.value or b"")
    assert (event["field"], orjson.loads(event["value"]), event["raw"]) == (
        "brand_new",
        value,
        body,
    )
    assert record.key == b"42"
    assert event["eventId"].startswith("brand_new:42:1750000000:")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "JSON array, not an object"),
        (b'{"object": "whatsapp_business_account"}', "entry is missing"),
        (b'{"entry": [{"id": "1"}]}', "entry[0].changes is missing"),
        (b'{"entry": [{"changes": [{"value": {}}]}]}', "entry[0].changes[0].field is missing"),
        (
            b'{"entry": [{"changes": [{"field": "messages", "value": {"messages": [{"a": 1}]}}]}]}',
            "entry[0].changes[0].value.messages[0].id is missing",
        ),
        (
            b'{"entry":[{"changes":[{"field":"messages","value":{"statuses":[{"id":"w"}]}}]}]}',
            "entry[0].changes[0].value.statuses[0].status is missing",
        ),
    ],
)
async def test_a_signed_body_that_is_not_a_webhook_is_quarantined_with_its_reason(
    ingress: str, ingress_settings: IngressSettings, read_records: Reader, body: bytes, reason: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{ingress}/v1/meta", content=body, headers=signed(body))
    assert response.status_code == 400
    assert reason in response.json()["reason"]
    [kept] = await read_records(ingress_settings.topics.quarantine, 1)
    assert kept.value == body
    assert reason in dict(kept.headers)["uplink-reason"].decode()
    assert await read_records(ingress_settings.topics.messages) == []


class Recorder(Handler):
    def __init__(self) -> None:
        self.handled: list[str] = []

    async def handle(self, inbound: Inbound) -> Positions | None:
        self.handled.append(inbound.push["messageId"])
        return None


async def test_a_post_retried_after_a_503_is_processed_once(
    serve: Server, ingress_settings: IngressSettings, read_records: Reader
) -> None:
    """The statuses topic does not exist (and the broker creates none): the POST's messages get in,
    its status does not, so 503. Once the topic exists, Meta's retry gets 200, and a worker
    reading the messages topic handles each message once."""
    settings = meta_settings(ingress_settings, create_topics=False, produce_timeout=1.0)
    topics = settings.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, 1, 1) for name in (topics.messages, topics.quarantine)]
        )
        url = await serve(create_app(settings))
        body = (META_EXAMPLES / "several.json").read_bytes()
        async with httpx.AsyncClient() as client:
            await wait_ready(client, url)
            first = await client.post(f"{url}/v1/meta", content=body, headers=signed(body))
            assert first.status_code == 503, first.text
            assert first.headers["retry-after"] == str(settings.retry_after)
            assert len(await read_records(topics.messages, 3)) == 3  # in, unacknowledged as a POST
            await admin.create_topics([NewTopic(topics.statuses, 1, 1)])
            retried = await client.post(f"{url}/v1/meta", content=body, headers=signed(body))
            assert retried.status_code == 200, retried.text
    finally:
        await admin.close()
    assert len(await read_records(topics.messages)) == 6
    assert len(await read_records(topics.statuses)) == 1  # only the retry's
    worker_settings = WorkerSettings(
        name="meta-retry", kafka=settings.kafka, topics=topics, group_id=f"g-{uuid.uuid4().hex}"
    )
    await ensure_worker_topics(worker_settings)
    recorder = Recorder()
    async with Worker(worker_settings, recorder, PUSHES) as worker:
        assert await worker.run(count=6, timeout=60) == 6
        assert sum(worker.metrics.duplicates.values()) == 3
    assert sorted(recorder.handled) == sorted(
        m["id"] for m in orjson.loads(body)["entry"][0]["changes"][0]["value"]["messages"]
    )


async def test_with_a_registry_every_records_schema_is_registered_and_its_id_framed(
    serve: Server, ingress_settings: IngressSettings, schema_registry: str, read_records: Reader
) -> None:
    settings = meta_settings(
        dataclasses.replace(ingress_settings, registry=RegistrySettings(schema_registry))
    )
    url = await serve(create_app(settings))
    body = (META_EXAMPLES / "several.json").read_bytes()
    event = (META_EXAMPLES / "account_update.json").read_bytes()
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)  # every schema registered
        for post in (body, event):
            response = await client.post(f"{url}/v1/meta", content=post, headers=signed(post))
            assert response.status_code == 200, response.text
    topics = settings.topics
    async with SchemaRegistry(RegistrySettings(schema_registry)) as registry:
        for topic, codec, count in (
            (topics.messages, PushCodec(), 3),
            (topics.statuses, StatusCodec(), 1),
            (topics.meta_events, MetaEventCodec(), 1),
        ):
            schema_id = await registry.register(subject(topic), codec.text)
            values = [r.value or b"" for r in await read_records(topic, count)]
            assert {v[:5] for v in values} == {b"\x00" + schema_id.to_bytes(4, "big")}, topic
            codec.frame_with(schema_id)  # a reader that knows the id
            assert all(codec.decode(v)["raw"] in (body, event) for v in values)
