"""Least privilege, proved: every component under a principal of its own holding exactly the
ACLs docs/security.md lists, on a broker with StandardAuthorizer and no ACL meaning no access.
The whole pipeline works so; without one ACL, the component that needs it says so (exit 78,
or, for the ingress, 503 and /readyz) instead of retrying as for an outage."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumers.router.rules import example_rules, load_rules
from tests.conftest import EXAMPLES, Server
from tests.consumers.media.server import MediaServer, b64sha256
from tests.security.acls import WORKERS, granted, needed, topic_env
from tests.security.cli import Verb, ended_after, serving, stopped_cleanly, until_ready, uplink
from tests.security.test_listeners import records_of
from tests.servers.secured import Acl, SecuredBroker
from uplink.broker import free_port

pytestmark = [pytest.mark.anyio, pytest.mark.secured]


def component_env(secured: SecuredBroker, principal: str, root: str) -> dict[str, str]:
    return {**secured.sasl_env("SCRAM-SHA-512", user=principal), **topic_env(root)}


def worker_env(secured: SecuredBroker, worker: str, root: str) -> dict[str, str]:
    """A worker under its principal, in a group of the test's own (``needed(groups=root)``):
    the broker's ACLs on a group name outlive a test."""
    return {**component_env(secured, worker, root), "UPLINK_GROUP_ID": f"{root}-{worker}"}


def worker_argv(worker: str, tmp_path: Path, rules: Path) -> tuple[str, ...]:
    if worker == "archive":
        return ("archive", "--archive-dir", str(tmp_path / "archive"), "--flush-interval", "0.5")
    if worker == "media":
        return ("media", "--media-dir", str(tmp_path / "media"))
    return ("router", "--rules", str(rules))


def one_refusal(stderr: str) -> str:
    """The one line the CLI said as it exited 78, with no traceback before it."""
    said = [line for line in stderr.splitlines() if line.startswith("uplink: ")]
    assert len(said) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return said[0]


def rules_for(root: str, tmp_path: Path) -> tuple[Path, list[str]]:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        example_rules()
        .read_text()
        .replace('"uplink.', f'"{root}.')
        .replace("http://127.0.0.1:9001/hooks/whatsapp", "http://127.0.0.1:9/unused")
    )
    return rules, sorted(load_rules(rules, {}).topics)


async def committed(secured: SecuredBroker, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=secured.plaintext)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(
        meta.offset
        for tp, meta in offsets.items()
        if isinstance(tp, TopicPartition) and tp.topic == topic and meta.offset > 0
    )


async def test_the_pipeline_runs_on_exactly_the_documented_acls(
    secured: SecuredBroker, serve: Server, tmp_path: Path
) -> None:
    root = f"acl{uuid.uuid4().hex[:6]}"
    rules, outputs = rules_for(root, tmp_path)
    acls = needed(root, outputs)
    async with granted(secured, (acl for each in acls.values() for acl in each)):
        await _pipeline(secured, serve, tmp_path, root, rules)


async def _pipeline(
    secured: SecuredBroker, serve: Server, tmp_path: Path, root: str, rules: Path
) -> None:
    media = MediaServer(files={"photo.jpg": b"\xff\xd8 a photo " * 100})
    base = await serve(media.app())
    push = orjson.loads(EXAMPLES.joinpath("image.json").read_bytes())
    push["message"]["image"].update(
        {"filePath": f"{base}/files/photo.jpg", "sha256": b64sha256(media.files["photo.jpg"])}
    )

    run = await uplink(component_env(secured, "topics", root), "topics")
    assert run.code == 0, run.stderr
    port = free_port()
    ingress_env = {**component_env(secured, "ingress", root), "UPLINK_CREATE_TOPICS": "false"}
    media_env = {**component_env(secured, "media", root), "UPLINK_MEDIA_ALLOW_HOSTS": "127.0.0.1"}
    parts = [
        await Verb(("ingress", "--port", str(port)), ingress_env).start(),
        await Verb(
            ("archive", "--archive-dir", str(tmp_path / "archive"), "--flush-interval", "0.5"),
            component_env(secured, "archive", root),
        ).start(),
        await Verb(("media", "--media-dir", str(tmp_path / "media")), media_env).start(),
        await Verb(
            ("router", "--rules", str(rules)), component_env(secured, "router", root)
        ).start(),
    ]
    try:
        async with httpx.AsyncClient() as client:
            url = f"http://127.0.0.1:{port}"
            await until_ready(client, url)
            answer = await client.post(f"{url}/v1/uplink", content=orjson.dumps(push))
            assert answer.status_code == 200, answer.text
        # Routed in a transaction, media fetched and its event written, archived.
        assert len(await records_of(secured, f"{root}.analytics.v1", 1)) == 1
        assert len(await records_of(secured, f"{root}.media.v1", 1)) == 1
        async with asyncio.timeout(180):
            while not list((tmp_path / "archive").rglob("*.avro")):  # noqa: ASYNC110 (polled)
                await asyncio.sleep(0.2)
    finally:
        ended = [await part.stop() for part in parts]
    for part, run in zip(parts, ended, strict=True):
        assert stopped_cleanly(part, run), (part.argv, run.code, run.stderr[-2000:])
    assert list((tmp_path / "media").rglob("*")), "the media worker stored nothing"


async def test_the_ingress_without_its_write_acl_answers_503_and_says_why(
    secured: SecuredBroker,
) -> None:
    root = f"acl{uuid.uuid4().hex[:6]}"
    acls = needed(root, [])
    async with granted(secured, acls["topics"] + acls["ingress"]):
        await _ingress_refused(secured, root)


async def _ingress_refused(secured: SecuredBroker, root: str) -> None:
    env = {**component_env(secured, "ingress", root), "UPLINK_CREATE_TOPICS": "false"}
    assert (await uplink(component_env(secured, "topics", root), "topics")).code == 0
    body = EXAMPLES.joinpath("text.json").read_bytes()
    async with serving(env) as ingress:
        client, url = ingress.client, ingress.url
        assert (await client.post(f"{url}/v1/uplink", content=body)).status_code == 200
        await secured.revoke([Acl("ingress", "write", "topic", f"{root}.messages.v1")])
        async with asyncio.timeout(180):
            while (await client.post(f"{url}/v1/uplink", content=body)).status_code == 200:  # noqa: ASYNC110
                await asyncio.sleep(0.2)  # the broker's ACL cache follows within moments
        answer = await client.post(f"{url}/v1/uplink", content=body)
        assert answer.status_code == 503
        ready = await client.get(f"{url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "Kafka refused the authorization"
        assert "topic" in ready.json()["refused"]
        metrics = (await client.get(f"{url}/metrics")).text
        assert 'uplink_ingress_kafka_refusals_total{kind="authorization"}' in metrics
        assert 'uplink_ingress_kafka_refusals_total{kind="authorization"} 0.0' not in metrics
    assert ingress.ended is not None
    assert (
        "Kafka refused access to a topic (SASL SCRAM-SHA-512 as 'ingress')" in ingress.ended.stderr
    )


def _removed(worker: str, resource: str, root: str) -> tuple[Acl, str, str]:
    """The ACL a case removes, what the refusal calls it, and the name it must say."""
    if resource == "group":
        acl = Acl(worker, "read", "group", f"{root}-{worker}", "prefixed")
        return acl, "a consumer group", f"{root}-{worker}"
    return Acl(worker, "read", "topic", f"{root}.messages.v1"), "a topic", f"{root}.messages.v1"


@pytest.mark.parametrize(
    ("worker", "resource"),
    [*((worker, "group") for worker in WORKERS), ("archive", "topic")],
)
async def test_a_worker_without_an_acl_it_needs_exits_78_within_30s_naming_it(
    secured: SecuredBroker, tmp_path: Path, worker: str, resource: str
) -> None:
    root = f"acl{uuid.uuid4().hex[:6]}"
    rules, outputs = rules_for(root, tmp_path)
    acls = needed(root, outputs, groups=root)
    removed, what, name = _removed(worker, resource, root)
    assert removed in acls[worker]
    kept = [acl for acl in acls[worker] if acl != removed]
    async with granted(secured, [*acls["topics"], *kept]):
        assert (await uplink(component_env(secured, "topics", root), "topics")).code == 0
        started = time.monotonic()
        run = await uplink(
            worker_env(secured, worker, root), *worker_argv(worker, tmp_path, rules), timeout=120
        )
        took = time.monotonic() - started
    assert run.code == 78, run.stderr[-3000:]
    said = one_refusal(run.stderr)
    assert said.startswith(
        f"uplink: configuration refused: Kafka refused access to {what} "
        f"(SASL SCRAM-SHA-512 as '{worker}'): "
    ), said
    assert name in said and f"check the principal's ACLs on {what[2:]}" in said, said
    assert took < 30, f"exited after {took:.1f}s"


@pytest.mark.parametrize(
    ("worker", "resource"),
    [("archive", "group"), ("archive", "topic"), ("media", "group"), ("router", "group")],
)
async def test_a_running_worker_whose_acl_is_removed_exits_78_naming_it(
    secured: SecuredBroker, tmp_path: Path, worker: str, resource: str
) -> None:
    root = f"acl{uuid.uuid4().hex[:6]}"
    rules, outputs = rules_for(root, tmp_path)
    acls = needed(root, outputs, groups=root)
    removed, what, name = _removed(worker, resource, root)
    async with granted(secured, [*acls["topics"], *acls[worker]]):
        assert (await uplink(component_env(secured, "topics", root), "topics")).code == 0
        verb = await Verb(
            worker_argv(worker, tmp_path, rules), worker_env(secured, worker, root)
        ).start()
        assigned = f"assigned [TopicPartition(topic='{root}.messages.v1'"
        run, took = await ended_after(verb, assigned, lambda: secured.revoke([removed]))
    assert run.code == 78, run.stderr[-3000:]
    said = one_refusal(run.stderr)
    assert f"Kafka refused access to {what} (SASL SCRAM-SHA-512 as '{worker}')" in said, said
    assert name in said, said
    assert took < 30, f"exited {took:.1f}s after the ACL was removed"
