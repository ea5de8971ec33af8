"""uplink against real secured listeners: SASL_SSL (PLAIN, SCRAM-SHA-256/512), TLS with client
certificates required, OAUTHBEARER from an OIDC issuer, the MSK IAM token; and the refusals of
each said as configuration errors (exit 78), not as outages."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from consumers.router.rules import example_rules
from tests.conftest import EXAMPLES
from tests.security.cli import Verb, namespace_env, stopped_cleanly, until_ready, uplink
from tests.servers.secured import FORGED, SHORT_LIFETIME, SHORT_LIVED, SecuredBroker
from uplink.broker import free_port
from uplink.exceptions import AuthenticationRefused
from uplink.kafka import KafkaClients, Producer
from uplink.settings import KafkaSettings, Secret, kafka_from_env, topics_from_env
from uplink.tokens import MskIamTokens, OidcTokens
from uplink.topics import ensure_topics

pytestmark = [pytest.mark.anyio, pytest.mark.secured]

BODY = EXAMPLES.joinpath("text.json").read_bytes()


async def records_of(secured: SecuredBroker, topic: str, count: int) -> list[bytes]:
    """``count`` records of ``topic``, read on the tests' own PLAINTEXT listener."""
    consumer = AIOKafkaConsumer(bootstrap_servers=secured.plaintext, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        values: list[bytes] = []
        async with asyncio.timeout(180):
            while len(values) < count:
                batches = await consumer.getmany(timeout_ms=500)
                values += [r.value for rs in batches.values() for r in rs if r.value is not None]
        return values
    finally:
        await consumer.stop()


async def round_trip(kafka: KafkaSettings, records: int = 3) -> list[bytes]:
    """Topics made, records produced and read back, all through ``kafka``'s security."""
    topics = topics_from_env(namespace_env())
    await ensure_topics(kafka, topics)
    clients = KafkaClients(kafka)
    sent = [uuid.uuid4().bytes for _ in range(records)]
    async with Producer(clients) as producer:
        for value in sent:
            await producer.send(topics.messages, value, key=b"k")
    consumer = clients.consumer(group_id=None, auto_offset_reset="earliest")
    await clients.start(consumer)
    try:
        consumer.assign([TopicPartition(topics.messages, p) for p in (0, 1)])
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while len(got) < records:
                batches = await consumer.getmany(timeout_ms=500)
                got += [r.value for rs in batches.values() for r in rs if r.value is not None]
    finally:
        await consumer.stop()
    assert sorted(got) == sorted(sent)
    return got


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_carries_records(secured: SecuredBroker, mechanism: str) -> None:
    await round_trip(kafka_from_env(secured.sasl_env(mechanism)))


async def test_client_certificates_with_an_encrypted_key(secured: SecuredBroker) -> None:
    settings = kafka_from_env(secured.mtls_env())
    assert settings.ssl_key_password is not None and "k3y" not in repr(settings)
    await round_trip(settings)


async def test_oauthbearer_tokens_from_the_oidc_issuer(secured: SecuredBroker) -> None:
    await round_trip(kafka_from_env(secured.oauth_env()))


async def test_an_expiring_token_is_renewed_and_the_clients_reconnect_with_it(
    secured: SecuredBroker,
) -> None:
    """Tokens of SHORT_LIFETIME seconds; the broker ends each session when its token expires,
    so producing for three lifetimes needs fresh tokens and new connections, without an error."""
    kafka = kafka_from_env(secured.oauth_env(SHORT_LIVED))
    topics = topics_from_env(namespace_env())
    await ensure_topics(kafka, topics)
    before = secured.identity.issued[SHORT_LIVED]
    sent = 0
    async with Producer(KafkaClients(kafka)) as producer:
        deadline = time.monotonic() + 3 * SHORT_LIFETIME
        while time.monotonic() < deadline:
            await producer.send(topics.messages, b"x%d" % sent, key=b"k")
            sent += 1
            await asyncio.sleep(0.5)
    assert len(await records_of(secured, topics.messages, sent)) == sent
    assert secured.identity.issued[SHORT_LIVED] - before >= 3
    assert "expired" in secured.log_text().lower()  # the broker did close expired sessions


async def test_a_refused_token_is_an_authentication_error_not_an_outage(
    secured: SecuredBroker,
) -> None:
    clients = KafkaClients(kafka_from_env(secured.oauth_env(FORGED)))
    admin = clients.admin()
    try:
        with pytest.raises(AuthenticationRefused, match="refused our OAUTHBEARER token"):
            await clients.start(admin)
    finally:
        await admin.close()


async def test_a_client_the_issuer_refuses_is_an_authentication_error(
    secured: SecuredBroker,
) -> None:
    tokens = OidcTokens(secured.identity.token_url, "oauth-client", Secret("not-its-secret"))
    with pytest.raises(AuthenticationRefused, match="invalid_client"):
        await tokens.token()


async def test_the_msk_iam_token_reaches_the_broker_as_an_oauthbearer_token(
    secured: SecuredBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What is proved: the signer's token (a SigV4-presigned kafka-cluster:Connect URL) is what
    uplink sends in the OAUTHBEARER exchange, and the broker's refusal of it is an
    authentication error. Not proved: that MSK accepts it (Kafka's validator cannot check an
    AWS signature: it refuses the token as no JWT, which its log says)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")  # the AWS SDK reads its own variables
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    env = {**secured.oauth_env(), "UPLINK_KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"}
    env["AWS_REGION"] = "eu-west-1"
    kafka = kafka_from_env(env)
    provider = kafka.client_options()["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokens) and provider.region == "eu-west-1"
    token = await provider.token()
    url = urlsplit(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert url.hostname == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert "X-Amz-Signature" in query
    assert "." not in token  # no JWT: what the broker's validator says of it is its own
    malformed = "Malformed JWT provided"
    before = secured.log_text().count(malformed)
    clients = KafkaClients(kafka)
    admin = clients.admin()
    try:
        with pytest.raises(AuthenticationRefused, match="OAUTHBEARER token: invalid_token"):
            await clients.start(admin)
    finally:
        await admin.close()
    async with asyncio.timeout(30):  # the broker's log is written as its lines come
        while secured.log_text().count(malformed) <= before:  # noqa: ASYNC110 (a file: polled)
            await asyncio.sleep(0.1)


async def test_uplink_topics_refused_certificate_exits_78_naming_it(
    secured: SecuredBroker,
) -> None:
    env = {**secured.mtls_env(secured.stranger), **namespace_env()}
    run = await uplink(env, "topics")
    assert run.code == 78, run.stderr
    assert "refused the TLS handshake" in run.stderr
    assert "UPLINK_KAFKA_SSL_CERTFILE" in run.stderr
    assert "Traceback" not in run.stderr


async def test_ingress_with_a_wrong_password_exits_78_within_30s_naming_the_cause(
    secured: SecuredBroker,
) -> None:
    env = {**secured.sasl_env("SCRAM-SHA-512", password="wrong"), **namespace_env()}
    started = time.monotonic()
    run = await uplink(env, "ingress", "--port", str(free_port()), timeout=30)
    assert run.code == 78, run.stderr
    assert time.monotonic() - started < 30
    assert "Kafka refused our credentials (SASL SCRAM-SHA-512 as 'admin')" in run.stderr
    assert "check UPLINK_KAFKA_SASL_USERNAME and UPLINK_KAFKA_SASL_PASSWORD" in run.stderr
    assert "wrong" not in run.stderr  # the password is not shown


async def test_ingress_archive_and_router_on_a_listener_that_requires_client_certificates(
    secured: SecuredBroker, tmp_path: Path
) -> None:
    env = {**secured.mtls_env(), **namespace_env()}
    messages = env["UPLINK_TOPIC_MESSAGES"]
    ns = messages.rsplit(".", 1)[0]
    rules = tmp_path / "rules.toml"
    rules.write_text(
        example_rules()
        .read_text()
        .replace('"uplink.', f'"{ns}.')
        .replace("http://127.0.0.1:9001/hooks/whatsapp", "http://127.0.0.1:9/unused")
    )
    assert (await uplink(env, "topics")).code == 0
    port = free_port()
    archive_dir = tmp_path / "archive"
    parts = [
        await Verb(("ingress", "--port", str(port)), env).start(),
        await Verb(
            ("archive", "--archive-dir", str(archive_dir), "--flush-interval", "0.5"), env
        ).start(),
        await Verb(("router", "--rules", str(rules)), env).start(),
    ]
    try:
        async with httpx.AsyncClient() as client:
            await until_ready(client, f"http://127.0.0.1:{port}")
            answer = await client.post(f"http://127.0.0.1:{port}/v1/uplink", content=BODY)
            assert answer.status_code == 200, answer.text
        # The router's copy of everything (the example rules' "analytics"), in a transaction.
        assert len(await records_of(secured, f"{ns}.analytics.v1", 1)) == 1
        async with asyncio.timeout(180):
            while not list(archive_dir.rglob("*.avro")):  # noqa: ASYNC110 (files: polled)
                await asyncio.sleep(0.2)
    finally:
        ended = [await part.stop() for part in parts]
    for part, run in zip(parts, ended, strict=True):
        assert stopped_cleanly(part, run), (part.argv, run.code, run.stderr[-2000:])
