"""The chart's pods, run: the rendered ingress and router Deployments under `podman kube play`
(which takes Deployments, ConfigMaps and podman secrets as Secrets), with their security
context, on a network of their own beside the stand-in Kafka image. The ingress answers
`/readyz` and a push with 200, and the router consumes the push.

Podman only (`kube play` is podman's); scripts/test runs it in its container step.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.tools import CHART, ROOT, run_helm
from tests.servers.kafka import DEFAULT_IMAGE, LABEL, kafka_environment

pytestmark = pytest.mark.container

TOKEN = "token-of-the-kube-play"
EXAMPLE = ROOT / "tests" / "examples" / "text.json"


def podman(*args: str, check: bool = True) -> str:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stderr[-2000:]}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def run() -> Iterator[str]:
    if shutil.which("podman") is None:
        pytest.skip("`podman kube play` needs podman (a Docker engine has no equivalent)")
    name = f"kube{uuid.uuid4().hex[:8]}"
    podman("network", "create", name)
    yield name
    podman("network", "rm", "--force", name, check=False)


@pytest.fixture(scope="module")
def kafka(run: str) -> Iterator[str]:
    """The stand-in Kafka image (scripts/test's UPLINK_TEST_KAFKA_IMAGE) as `kafka:9092` on
    the run's network."""
    image = os.environ.get("UPLINK_TEST_KAFKA_IMAGE") or DEFAULT_IMAGE
    labels = ["--label", f"{LABEL}={os.environ.get('UPLINK_TEST_RUN', run)}"]
    env = [f"--env={k}={v}" for k, v in kafka_environment("kafka", 9092, "512m").items()]
    name = f"{run}-kafka"
    podman("run", "-d", "--name", name, "--network", run, "--network-alias", "kafka",
           *labels, *env, image)  # fmt: skip
    yield name
    podman("rm", "--force", "--time", "1", name, check=False)


@pytest.fixture(scope="module")
def pods(
    run: str, kafka: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The rendered ingress and router, played; their pods' addresses by component."""
    image = subprocess.run(
        [str(ROOT / "scripts" / "uplink-image")], capture_output=True, text=True, check=True
    ).stdout.strip()
    repository, tag = image.rsplit(":", 1)
    # podman reads a secretKeyRef from a podman secret: a JSON map of base64 values.
    work = tmp_path_factory.mktemp("kube-play")
    secret = work / "secret.json"
    secret.write_text(json.dumps({"uplink-token": base64.b64encode(TOKEN.encode()).decode()}))
    podman("secret", "create", run, str(secret))
    secret.unlink()
    values = {
        "kafka.bootstrapServers": "kafka:9092",
        "topics.replicationFactor": "1",
        "secrets.name": run,
        "image.repository": repository,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "ingress.autoscaling.enabled": "false",
        "ingress.replicas": "1",
        "router.replicas": "1",
        "archive.enabled": "false",
        "media.enabled": "false",
    }
    sets = [f"--set={key}={value}" for key, value in values.items()]
    rendered = run_helm("template", run, str(CHART), *sets)
    assert rendered.returncode == 0, rendered.stderr
    docs = [
        doc
        for doc in yaml.safe_load_all(rendered.stdout)
        if doc and doc["kind"] in {"Deployment", "ConfigMap"}
    ]
    played = work / "kube.yaml"
    played.write_text(yaml.safe_dump_all(docs))
    try:
        # Kafka may not answer yet: the router exits 75 and the pod's restart policy restarts it.
        podman("kube", "play", "--network", run, str(played))
        yield {
            component: pod_address(f"{run}-uplink-{component}-pod-0")
            for component in ("ingress", "router")
        }
    finally:
        podman("kube", "down", str(played), check=False)
        # `kube down` (podman 4) leaves the volumes `kube play` made of the ConfigMaps.
        for doc in docs:
            if doc["kind"] == "ConfigMap":
                podman("volume", "rm", "--force", doc["metadata"]["name"], check=False)
        podman("secret", "rm", run, check=False)


def pod_address(pod: str) -> str:
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod)
    networks: dict[str, Any] = json.loads(
        podman("inspect", "--format", "{{json .NetworkSettings.Networks}}", infra)
    )
    (network,) = networks.values()
    return str(network["IPAddress"])


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(1)


def test_the_played_pods_run_as_the_chart_says(run: str, pods: dict[str, str]) -> None:
    container = f"{run}-uplink-ingress-pod-0-ingress"
    shown = podman(
        "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}", container
    )
    assert shown == "true 10001:10001"
    status = podman("exec", container, "grep", "-E", "^(CapEff|Seccomp):", "/proc/self/status")
    assert "CapEff:\t0000000000000000" in status
    assert "Seccomp:\t2" in status  # a seccomp filter is on


def test_the_ingress_takes_a_push_and_the_router_consumes_it(pods: dict[str, str]) -> None:
    ingress = f"http://{pods['ingress']}:8080"
    with httpx.Client(timeout=10) as client:
        until(lambda: client.get(f"{ingress}/readyz").status_code == 200, 240, "/readyz 200")
        body = EXAMPLE.read_bytes()
        headers = {"content-type": "application/json"}
        refused = client.post(f"{ingress}/v1/uplink", content=body, headers=headers)
        assert refused.status_code == 401  # the token came from the secret
        pushed = client.post(
            f"{ingress}/v1/uplink",
            content=body,
            headers={**headers, "authorization": f"Bearer {TOKEN}"},
        )
        assert pushed.status_code == 200, pushed.text

        def processed() -> float:
            text = client.get(f"http://{pods['router']}:9100/metrics").text
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("uplink_worker_processed_total{") and 'worker="router"' in line
            )

        assert until(processed, 240, "the router processed the push") == 1
