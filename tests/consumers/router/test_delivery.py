"""The router's HTTP deliveries through httpx's transport seam: what is sent and how each answer
is judged, without a server. (tests/consumers/router/test_handler.py delivers to real servers.)"""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest
from prometheus_client import CollectorRegistry

from consumers.router.delivery import Deliverer, Verdict
from consumers.router.metrics import RouterMetrics
from consumers.router.rules import Endpoint
from uplink.http import HttpClients
from uplink.settings import Secret

pytestmark = pytest.mark.anyio

ENDPOINT = Endpoint("crm", "https://crm.example/hook", Secret("s3cret"), timeout=1, concurrency=2)


def deliverer(handler: httpx.MockTransport) -> Deliverer:
    metrics = RouterMetrics(CollectorRegistry(auto_describe=False))
    return Deliverer(
        {"crm": ENDPOINT}, metrics, clock=lambda: 1700000000, clients=HttpClients(handler)
    )


async def test_a_post_carries_the_body_its_idempotency_key_and_a_verifiable_signature() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async with deliverer(httpx.MockTransport(answer)) as posts:
        attempt = await posts.post("crm", b'{"messageId":"m1"}', "m1", "rule-a")
    assert attempt.verdict is Verdict.DELIVERED
    [request] = seen
    assert request.url == "https://crm.example/hook"
    assert request.content == b'{"messageId":"m1"}'
    assert request.headers["idempotency-key"] == "m1"
    assert request.headers["x-uplink-rule"] == "rule-a"
    timestamp = request.headers["x-uplink-timestamp"]
    assert timestamp == "1700000000"
    expected = hmac.new(b"s3cret", timestamp.encode() + b"." + request.content, hashlib.sha256)
    assert request.headers["x-uplink-signature"] == "v1=" + expected.hexdigest()
    assert posts.delivered_recently("crm", "m1")


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.DELIVERED), (408, Verdict.RETRY), (429, Verdict.RETRY), (503, Verdict.RETRY),
     (400, Verdict.REFUSED), (410, Verdict.REFUSED)],
)  # fmt: skip
async def test_each_answer_is_delivered_retried_or_refused(status: int, verdict: Verdict) -> None:
    async with deliverer(httpx.MockTransport(lambda _: httpx.Response(status))) as posts:
        attempt = await posts.post("crm", b"{}", "m", "r")
    assert attempt.verdict is verdict
    if verdict is not Verdict.DELIVERED:
        assert f"HTTP {status}" in attempt.reason


async def test_a_connection_error_is_retried_with_its_reason() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with deliverer(httpx.MockTransport(refuse)) as posts:
        attempt = await posts.post("crm", b"{}", "m", "r")
    assert attempt.verdict is Verdict.RETRY
    assert "ConnectError: connection refused" in attempt.reason


async def test_clients_ignore_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy in the environment must not reroute signed deliveries or media downloads.
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    client = HttpClients()(timeout=httpx.Timeout(1), limits=httpx.Limits())
    async with client:
        assert not client._trust_env
        assert client._mounts == {}  # no proxy transport mounted
