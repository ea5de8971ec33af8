"""``uplink quarantine``, ``trace`` and ``conversation`` against the session's broker: bodies
quarantined by a real ingress, pushes processed, pending and dead-lettered by a real router."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from consumers.router.rules import load_rules
from consumers.router.settings import RouterSettings
from ingress.app import create_app
from schemas import PushCodec
from tests.conftest import EXAMPLES, Reader, Server, wait_ready
from tests.consumers.router.test_handler import (
    SECRET,
    Receiver,
    example_raw,
    make_rules,
    running_router,
    send_pushes,
)
from tests.ingress.test_meta import meta_settings, signed
from tests.uplink.operate.conftest import OperateSettings, Uplink
from uplink.settings import IngressSettings, Secret

pytestmark = pytest.mark.anyio

CODEC = PushCodec()


def conversation_push(name: str, message_id: str) -> bytes:
    """The spec's example ``name``, in one conversation (the examples' phones differ)."""
    body = orjson.loads(example_raw(name, message_id))
    body["businessPhone"] = "639518159038"
    body["from"]["phone"] = "91856321412"
    return orjson.dumps(body)


def lines(text: str) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


async def test_a_quarantined_body_is_listed_shown_and_reposted(
    operate_settings: OperateSettings, serve: Server, uplink: Uplink, read_records: Reader
) -> None:
    settings = operate_settings("router")
    ingress = IngressSettings(kafka=settings.kafka, topics=settings.topics, token=Secret("tok"))
    url = await serve(create_app(ingress))
    good = example_raw("text", "once-refused")
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
        refused = await client.post(
            f"{url}/v1/uplink",
            content=b"hello, world",
            headers={"content-type": "application/json", "authorization": "Bearer tok"},
        )
    assert refused.status_code == 400
    # A body an earlier ingress refused (a bug since fixed), kept as the ingress keeps them.
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topics.quarantine,
            good,
            headers=[
                ("uplink-reason", b"messageId: a bug since fixed"),
                ("uplink-received-at", str(int(time.time() * 1000)).encode()),
                ("uplink-content-type", b"application/json"),
            ],
        )
    finally:
        await producer.stop()

    listed = await uplink(settings, "quarantine", "list", "--since", "1h", "--json")
    rows = lines(listed.out)
    assert listed.code == 0 and len(rows) == 2
    assert "JSON" in str(rows[0]["reason"]) and rows[0]["preview"] == "hello, world"
    assert "read 2 records" in listed.err

    shown = await uplink(settings, "quarantine", "show", str(rows[1]["ref"]))
    assert shown.code == 0 and "bug since fixed" in shown.out and "once-refused" in shown.out

    dry = await uplink(settings, "quarantine", "repost", "--reason", "fixed", "--dry-run")
    assert dry.code == 0 and "would be sent" in dry.out
    assert await read_records(settings.topics.messages, timeout=1) == []

    target = f"{url}/v1/uplink"
    reposted = await uplink(
        settings, "quarantine", "repost", str(rows[1]["ref"]), "--to", target, "--token", "tok"
    )
    assert reposted.code == 0, reposted
    assert (
        lines(
            (
                await uplink(
                    settings,
                    "quarantine",
                    "repost",
                    str(rows[1]["ref"]),
                    "--to",
                    target,
                    "--token",
                    "tok",
                    "--json",
                )
            ).out
        )[0]["status"]
        == 200
    )
    [kept, _again] = await read_records(settings.topics.messages, count=2)
    assert CODEC.decode(kept.value or b"")["raw"] == good  # the dedupe of the workers drops the 2nd

    still_bad = await uplink(
        settings, "quarantine", "repost", str(rows[0]["ref"]), "--to", target, "--token", "tok"
    )
    assert still_bad.code == 1 and "400" in still_bad.out


async def test_trace_tells_processed_pending_and_dead_lettered_and_conversation_lists_pushes(
    operate_settings: OperateSettings, serve: Server, uplink: Uplink, read_records: Reader
) -> None:
    settings = operate_settings("router", commit_interval=0.2)
    router = RouterSettings(delays=(0.2,), delay_pattern=settings.topics.messages + ".d{step}")
    receiver = Receiver()
    url = await serve(receiver.app())
    rules = make_rules(
        f"""
        [endpoint.crm]
        url = "{url}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "texts"
        match = {{ type = "text" }}
        actions = [{{ post = "crm" }}]
        """
    )
    refusing = Receiver(failures=100, status=400)
    bad_url = await serve(refusing.app())
    rules_bad = make_rules(
        f"""
        [endpoint.crm]
        url = "{bad_url}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "texts"
        match = {{ type = "text" }}
        actions = [{{ post = "crm" }}]
        """
    )
    examples = ["text", "image", "location", "interactive", "contacts"]
    await send_pushes(settings, [conversation_push(name, f"conv-{name}") for name in examples])
    async with running_router(settings, router, rules):
        await receiver.wait_for(lambda: receiver.accepted["conv-text"] == 1)
        await read_records(settings.topics.messages, count=5)
    await send_pushes(settings, [conversation_push("text", "refused-text")])
    async with running_router(settings, router, rules_bad):
        await read_records(settings.dlq, count=1, timeout=60)
    await send_pushes(settings, [conversation_push("text", "waiting-text")])  # no router runs now

    groups = [
        "--group",
        f"router={settings.group}",
        "--group",
        "media=nobody-m",
        "--group",
        "archive=nobody-a",
    ]
    done = await uplink(settings, "trace", "conv-text", "--json", *groups)
    [row] = lines(done.out)
    states = {g["group"]: g["state"] for g in row["found"][0]["groups"]}  # type: ignore[index]
    assert states[settings.group] == "processed"
    assert states["nobody-m"] == "pending"
    assert "read" in done.err

    dead = await uplink(
        settings,
        "trace",
        "refused-text",
        "--json",
        *groups,
        "--business",
        "639518159038",
        "--from",
        "91856321412",
    )
    [row] = lines(dead.out)
    [router_state] = [g for g in row["found"][0]["groups"] if g["group"] == settings.group]  # type: ignore[index]
    assert router_state["state"] == "dead-lettered" and "HTTP 400" in router_state["detail"]

    waiting = await uplink(settings, "trace", "waiting-text", *groups)
    assert waiting.code == 0
    assert "pending" in waiting.out and "0 records before it" in waiting.out
    missing = await uplink(settings, "trace", "nowhere", *groups)
    assert missing.code == 1 and "not found" in missing.out

    chat = await uplink(
        settings, "conversation", "639518159038", "91856321412", "--json", *groups[:2]
    )
    pushes = lines(chat.out)
    assert [p["messageId"] for p in pushes] == [
        *(f"conv-{name}" for name in examples),
        "refused-text",
        "waiting-text",
    ]
    by_id = {p["messageId"]: p for p in pushes}
    text = orjson.loads(EXAMPLES.joinpath("text.json").read_bytes())
    assert by_id["conv-text"]["text"] == text["message"]["text"]["body"]
    assert by_id["conv-image"]["type"] == "image" and by_id["conv-image"]["media"]
    assert by_id["conv-text"]["status"] == "processed"
    assert by_id["waiting-text"]["status"].startswith("pending")  # type: ignore[union-attr]
    table = await uplink(settings, "conversation", "639518159038", "91856321412")
    assert table.out.splitlines()[0].split()[:3] == ["TIME", "TYPE", "TEXT"]
    assert len(table.out.splitlines()) == 8


def meta_statuses(wamid: str, *states: tuple[str, str]) -> bytes:
    """One webhook POST of Meta's carrying the statuses ``(status, timestamp)`` of ``wamid``
    (a message the business sent), the reference's failed example's errors on a failure."""
    failed = orjson.loads(EXAMPLES.joinpath("meta", "status_failed.json").read_bytes())
    [example] = failed["entry"][0]["changes"][0]["value"]["statuses"]
    body = orjson.loads(EXAMPLES.joinpath("meta", "status_delivered.json").read_bytes())
    value = body["entry"][0]["changes"][0]["value"]
    value["statuses"] = [
        {
            "id": wamid,
            "status": state,
            "timestamp": at,
            "recipient_id": "16505551234",
            **({"errors": example["errors"]} if state == "failed" else {}),
        }
        for state, at in states
    ]
    return orjson.dumps(body)


async def test_trace_of_a_meta_message_shows_its_statuses(
    operate_settings: OperateSettings, serve: Server, uplink: Uplink, read_records: Reader
) -> None:
    settings = operate_settings("router")
    ingress = meta_settings(IngressSettings(kafka=settings.kafka, topics=settings.topics))
    url = await serve(create_app(ingress))
    inbound = EXAMPLES.joinpath("meta", "text.json").read_bytes()
    reply, other = "wamid.reply-to-text", "wamid.another-reply"
    posts = [
        inbound,
        meta_statuses(reply, ("sent", "1750276000"), ("delivered", "1750276002")),
        meta_statuses(other, ("sent", "1750276003"), ("failed", "1750276004")),
        meta_statuses(reply, ("read", "1750276010")),
    ]
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
        for body in posts:
            answer = await client.post(f"{url}/v1/meta", content=body, headers=signed(body))
            assert answer.status_code == 200, answer.text
    await read_records(settings.topics.statuses, count=5)
    conversation = ["--business", "15550783881", "--from", "16505551234"]

    traced = await uplink(settings, "trace", reply, "--json", *conversation)
    assert traced.code == 0, traced
    [row] = lines(traced.out)
    assert row["found"] == []  # a message the business sent: not a push, its statuses only
    statuses = row["statuses"]
    assert isinstance(statuses, list)
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert statuses[2]["time"] == "2025-06-18T19:46:50.000Z"
    assert all(s["recipient"] == "16505551234" for s in statuses)
    assert settings.topics.statuses in traced.err  # read the statuses topic, and said so

    failed = await uplink(settings, "trace", other)  # no phones: every partition is read
    assert failed.code == 0, failed
    assert "status: failed" in failed.out and "healthy ecosystem" in failed.out

    text = await uplink(settings, "trace", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQTEXT", "--json")
    [row] = lines(text.out)
    assert len(row["found"]) == 1 and row["statuses"] == []  # type: ignore[arg-type]


async def test_trace_finds_the_router_outputs_from_the_routers_own_settings(
    operate_settings: OperateSettings, serve: Server, uplink: Uplink, tmp_path: Path
) -> None:
    settings = operate_settings("router", commit_interval=0.2)
    receiver = Receiver(failures=1)  # the first attempt fails: the delivery is parked
    url = await serve(receiver.app())
    output = settings.topics.messages + ".texts"
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        f"""
        [default]
        drop = true
        [endpoint.crm]
        url = "{url}/hook"
        secret = "{SECRET}"
        [[rule]]
        name = "texts"
        match = {{ type = "text" }}
        actions = [{{ topic = "{output}" }}, {{ post = "crm" }}]
        """
    )
    delay_pattern = settings.topics.messages + ".d{step}"
    router = RouterSettings(delays=(0.2,), delay_pattern=delay_pattern)
    await send_pushes(settings, [conversation_push("text", "routed-text")])
    async with running_router(settings, router, load_rules(rules_file, {})):
        await receiver.wait_for(lambda: receiver.accepted["routed-text"] == 1)

    # The operator's shell has the router's settings, as for every other verb: no flags.
    env = {
        "UPLINK_ROUTER_RULES": str(rules_file),
        "UPLINK_TOPIC_ROUTER_DELAY": delay_pattern,
        "UPLINK_ROUTER_DELAYS": "0.2",
    }
    traced = await uplink(
        settings, "trace", "routed-text", "--json", "--group", f"router={settings.group}", env=env
    )
    assert traced.code == 0, traced
    [row] = lines(traced.out)
    outputs = row["outputs"]
    assert isinstance(outputs, list)
    by_topic = {o["topic"]: o for o in outputs}
    assert set(by_topic) == {output, router.delay_topic(1)}, outputs
    assert by_topic[output]["rule"] == "texts"
    assert by_topic[router.delay_topic(1)]["endpoint"] == "crm"

    table = await uplink(settings, "trace", "routed-text", env=env)
    assert f"router: {output}[" in table.out and "-> crm" in table.out
    without = await uplink(settings, "trace", "routed-text", "--json")  # no rules: delay topics
    assert [o["topic"] for o in lines(without.out)[0]["outputs"]] == []  # type: ignore[union-attr]
