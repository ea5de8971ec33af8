"""Credentials changed on the broker while uplink runs (a password rotated without telling
uplink): each worker stops with exit code 78 naming the refusal, the ingress answers 503 and
says why on /readyz and in its metrics. On the EXPIRING listener sessions end after a few
seconds, so the new password is asked for soon, as on a cluster that re-authenticates."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.security.acls import granted, needed, topic_env
from tests.security.cli import Verb, ended_after, serving, uplink
from tests.security.test_acls import component_env, one_refusal
from tests.servers.secured import Acl, SecuredBroker

pytestmark = [pytest.mark.anyio, pytest.mark.secured]

REFUSED = "Kafka refused our credentials (SASL SCRAM-SHA-512 as '{user}')"
CHECK = "check UPLINK_KAFKA_SASL_USERNAME and UPLINK_KAFKA_SASL_PASSWORD"


async def principal(
    secured: SecuredBroker, component: str, acls: list[Acl]
) -> tuple[str, list[Acl]]:
    """A SCRAM user of the test's own (its password is changed) with ``component``'s ACLs."""
    user = f"{component}-{uuid.uuid4().hex[:6]}"
    await secured.set_password(user)
    return user, [dataclasses.replace(acl, principal=user) for acl in acls]


async def test_a_running_worker_whose_password_is_changed_exits_78_naming_it(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    root = f"rot{uuid.uuid4().hex[:6]}"
    acls = needed(root, [], groups=root)
    user, own = await principal(secured, "archive", acls["archive"])
    env = {**secured.expiring_env(user), **topic_env(root), "UPLINK_GROUP_ID": f"{root}-archive"}
    async with granted(secured, [*acls["topics"], *own]):
        assert (await uplink(component_env(secured, "topics", root), "topics")).code == 0
        archive = await Verb(("archive", "--archive-dir", str(tmp_path / "archive")), env).start()
        old = secured.passwords[user]
        assigned = f"assigned [TopicPartition(topic='{root}.messages.v1'"
        # A new password, which the worker does not have.
        run, took = await ended_after(archive, assigned, lambda: secured.set_password(user))
    assert run.code == 78, run.stderr[-3000:]
    said = one_refusal(run.stderr)
    assert REFUSED.format(user=user) in said and CHECK in said, said
    assert old not in run.stderr
    assert took < 60, f"exited {took:.1f}s after the password changed"


async def test_a_running_ingress_whose_password_is_changed_answers_503_and_says_why(
    secured: SecuredBroker,
) -> None:
    root = f"rot{uuid.uuid4().hex[:6]}"
    acls = needed(root, [])
    user, own = await principal(secured, "ingress", acls["ingress"])
    env = {**secured.expiring_env(user), **topic_env(root), "UPLINK_CREATE_TOPICS": "false"}
    body = EXAMPLES.joinpath("text.json").read_bytes()
    async with granted(secured, [*acls["topics"], *own]):
        assert (await uplink(component_env(secured, "topics", root), "topics")).code == 0
        async with serving(env) as ingress:
            client, url = ingress.client, ingress.url
            assert (await client.post(f"{url}/v1/uplink", content=body)).status_code == 200
            old = secured.passwords[user]
            await secured.set_password(user)
            async with asyncio.timeout(120):
                while (await client.get(f"{url}/readyz")).json().get("reason") != (  # noqa: ASYNC110
                    "Kafka refused our credentials"
                ):
                    await asyncio.sleep(0.2)  # the session ends within SESSION_LIFETIME
            ready = await client.get(f"{url}/readyz")
            assert ready.status_code == 503
            assert REFUSED.format(user=user) in ready.json()["refused"]
            assert ready.json()["check"] == CHECK[len("check ") :]
            answer = await client.post(f"{url}/v1/uplink", content=body)  # at once: 5 s at most
            assert answer.status_code == 503, answer.text
            assert "Retry-After" in answer.headers
            metrics = (await client.get(f"{url}/metrics")).text
            counted = 'uplink_ingress_kafka_refusals_total{kind="authentication"}'
            assert counted in metrics
            assert f"{counted} 0.0" not in metrics
    assert ingress.ended is not None
    assert REFUSED.format(user=user) in ingress.ended.stderr  # said in its log
    assert old not in ingress.ended.stderr
