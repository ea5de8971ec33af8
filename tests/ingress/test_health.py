"""Liveness, readiness and metrics; and 503 with Retry-After while Kafka cannot be reached."""

from __future__ import annotations

import httpx
import pytest

from ingress.app import create_app
from tests.conftest import EXAMPLES, SERVERS, Server, wait_ready
from uplink.broker import free_port
from uplink.settings import IngressSettings, KafkaSettings

pytestmark = pytest.mark.anyio

BODY = EXAMPLES.joinpath("text.json").read_bytes()


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_metrics_count_what_was_answered(
    serve: Server, ingress_settings: IngressSettings
) -> None:
    url = await serve(create_app(ingress_settings))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
        assert (await client.get(f"{url}/healthz")).json() == {"status": "alive"}
        assert (await client.post(f"{url}/v1/uplink", content=BODY)).status_code == 200
        assert (await client.post(f"{url}/v1/uplink", content=b"nope")).status_code == 400
        metrics = (await client.get(f"{url}/metrics")).text
    assert 'uplink_ingress_pushes_total{code="200"} 1.0' in metrics
    assert 'uplink_ingress_pushes_total{code="400"} 1.0' in metrics
    assert 'uplink_ingress_quarantined_total{reason="not_a_push"} 1.0' in metrics
    assert "uplink_ingress_produce_seconds_count" in metrics
    assert "uplink_ingress_in_flight 0.0" in metrics


@pytest.mark.parametrize("server", SERVERS, indirect=True)
async def test_without_a_broker_pushes_get_503_with_retry_after_and_not_ready(
    serve: Server, ingress_settings: IngressSettings
) -> None:
    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    url = await serve(create_app(IngressSettings(kafka=nowhere, topics=ingress_settings.topics)))
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200
        assert (await client.get(f"{url}/readyz")).status_code == 503
        response = await client.post(f"{url}/v1/uplink", content=BODY)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        # Bad bodies cannot be quarantined either: they must not be answered 400 and lost.
        assert (await client.post(f"{url}/v1/uplink", content=b"nope")).status_code == 503
        metrics = (await client.get(f"{url}/metrics")).text
    assert 'uplink_ingress_shed_total{cause="kafka"} 2.0' in metrics
