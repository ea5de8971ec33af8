"""The Helm chart, deploy/helm/uplink: linted, rendered with each values example, validated
strictly against the Kubernetes API's, KEDA's and the Prometheus operator's schemas (offline,
tests/deploy/tools.py), and read back: what every Deployment must have, the autoscaling bounds,
and secrets referenced, never written into a manifest.

No cluster runs here: what a cluster would add (admission, the KEDA operator) is not tested.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import CHART, SCHEMA_LOCATION, kubeconform, run_helm, schemas
from uplink.cli.reference import variables

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
# Where KEDA and the Prometheus operator are installed: the APIs the chart looks for.
CRDS = [
    "keda.sh/v1alpha1",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
]
WORKERS = ["archive", "media", "router"]
# The Kafka settings of the client-certificate and OAUTHBEARER work (issue 23), which the chart
# passes for those examples before that branch declares them here.
KAFKA_AUTH = {
    "UPLINK_KAFKA_SSL_CERTFILE",
    "UPLINK_KAFKA_SSL_KEYFILE",
    "UPLINK_KAFKA_SSL_KEY_PASSWORD",
    "UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL",
    "UPLINK_KAFKA_SASL_OAUTH_CLIENT_ID",
    "UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET",
    "UPLINK_KAFKA_SASL_OAUTH_SCOPE",
    "UPLINK_KAFKA_AWS_REGION",
}


@cache
def render(values: Path | None, *flags: str, crds: bool = True) -> str:
    apis = [f"--api-versions={api}" for api in CRDS] if crds else []
    files = ["-f", str(values)] if values else []
    result = run_helm("template", "uplink", str(CHART), *files, *apis, *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout


@cache
def objects(text: str) -> list[dict[str, Any]]:
    """The objects of a rendering (shared between tests: read them, never change them)."""
    return [doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def pods(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each Deployment's and Job's pod spec, by the object's name."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def render_fails(*flags: str) -> str:
    result = run_helm("template", "uplink", str(CHART), "-f", str(EXAMPLES[0]), *flags)
    assert result.returncode != 0, "rendered"
    return result.stderr


@pytest.fixture(scope="module", params=EXAMPLES, ids=lambda path: path.stem)
def example(request: pytest.FixtureRequest) -> Path:
    path: Path = request.param
    return path


def test_there_is_an_example_for_each_kafka_and_the_stores() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {"strimzi-mtls", "strimzi-scram", "msk-iam", "confluent-cloud", "s3-registry"} <= names


def test_the_chart_lints_strictly(example: Path) -> None:
    result = run_helm("lint", "--strict", str(CHART), "-f", str(example))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("crds", [True, False], ids=["with-crds", "bare-cluster"])
def test_the_rendered_manifests_validate_strictly(
    example: Path, crds: bool, tmp_path: Path
) -> None:
    manifests = tmp_path / "manifests.yaml"
    manifests.write_text(render(example, crds=crds))
    result = subprocess.run(
        [
            str(kubeconform()),
            "-strict",
            "-summary",
            "-schema-location",
            f"{schemas()}/{SCHEMA_LOCATION}",
            str(manifests),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every object was checked against a schema: none skipped for want of one.
    assert "Skipped: 0" in result.stdout, result.stdout
    assert "Invalid: 0, Errors: 0" in result.stdout, result.stdout


def test_every_pod_runs_locked_down_with_probes_and_resources(example: Path) -> None:
    docs = objects(render(example))
    deployments = {doc["metadata"]["name"] for doc in of_kind(docs, "Deployment")}
    assert deployments == {f"uplink-{name}" for name in ["ingress", *WORKERS]}
    for name, pod in pods(docs):
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] == 10001, name  # the image's user
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"] == {"drop": ["ALL"]}, name
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), name
            assert "memory" in resources["limits"], name
            mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
            assert "/tmp" in mounts, name  # the only writable place besides a spool
            if name.endswith("-topics"):
                continue
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                assert probe in container, (name, probe)


def test_the_ingress_is_probed_on_readyz_and_healthz_and_outlives_its_produce_timeout(
    example: Path,
) -> None:
    docs = objects(render(example))
    (deployment,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ingress")
    ]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    produce_timeout = float(env(container)["UPLINK_PRODUCE_TIMEOUT"]["value"])
    pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert pod["terminationGracePeriodSeconds"] > pre_stop + produce_timeout
    assert env(container)["UPLINK_CREATE_TOPICS"]["value"] == "false"  # the hook made them
    assert "UPLINK_TOKEN" in env(container)
    kinds = {doc["kind"] for doc in docs if doc["metadata"]["name"].endswith("-ingress")}
    assert {"Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"} <= kinds
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_a_grace_period_shorter_than_the_produce_timeout_is_refused() -> None:
    error = render_fails("--set", "ingress.terminationGracePeriodSeconds=8")
    assert "terminationGracePeriodSeconds" in error and "produceTimeout" in error


def test_workers_are_probed_on_their_metrics_port(example: Path) -> None:
    docs = objects(render(example))
    for doc in of_kind(docs, "Deployment"):
        name = doc["metadata"]["name"].removeprefix("uplink-")
        if name == "ingress":
            continue
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] == name
        port = int(env(container)["UPLINK_METRICS_PORT"]["value"])
        assert container["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] == "metrics"


def test_each_group_scales_on_its_lag_never_past_the_partitions(example: Path) -> None:
    docs = objects(render(example))
    scaled = {doc["metadata"]["name"]: doc for doc in of_kind(docs, "ScaledObject")}
    assert set(scaled) == {f"uplink-{name}" for name in WORKERS}
    partitions = int(
        yaml.safe_load(example.read_text()).get("topics", {}).get("messagesPartitions", 12)
    )
    for name, scaled_object in scaled.items():
        spec = scaled_object["spec"]
        assert spec["scaleTargetRef"]["name"] == name
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        metadata = trigger["metadata"]
        assert metadata["consumerGroup"] == name  # uplink-<worker>, the group's default name
        assert metadata["topic"] == "uplink.messages.v1"
        # A stuck partition's lag does not drive scale-up; no member beyond the lagging ones.
        assert metadata["excludePersistentLag"] == "true"
        assert metadata["limitToPartitionsWithLag"] == "true"
        assert metadata["allowIdleConsumers"] == "false"
    # With KEDA the replica count is KEDA's: the Deployments leave it unset.
    for doc in of_kind(docs, "Deployment"):
        if doc["metadata"]["name"] in scaled:
            assert "replicas" not in doc["spec"]


def test_without_keda_the_workers_have_fixed_replicas_and_no_operator_objects() -> None:
    docs = objects(render(EXAMPLES[0], crds=False))
    kinds = {doc["kind"] for doc in docs}
    assert not kinds & {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
    for doc in of_kind(docs, "Deployment"):
        if not doc["metadata"]["name"].endswith("-ingress"):
            assert doc["spec"]["replicas"] == 2


def test_keda_can_be_forced_on_without_its_api() -> None:
    docs = objects(render(EXAMPLES[0], "--set", "workers.keda.enabled=true", crds=False))
    assert len(of_kind(docs, "ScaledObject")) == 3


def test_a_maximum_above_the_partition_count_is_refused() -> None:
    error = render_fails(
        "--api-versions=keda.sh/v1alpha1",
        "--set",
        "topics.messagesPartitions=6",
        "--set",
        "workers.keda.maxReplicaCount=8",
    )
    assert "maxReplicaCount 8 is above the 6 partitions" in error


def test_secrets_are_referenced_never_written(example: Path) -> None:
    docs = objects(render(example))
    secret_names = {name for variable in variables() if variable.secret for name in variable.names}
    assert "UPLINK_TOKEN" in secret_names and "AWS_SECRET_ACCESS_KEY" in secret_names
    assert not of_kind(docs, "Secret")  # the chart makes none: the user's are named
    for name, pod in pods(docs):
        for container in pod["containers"]:
            for variable, entry in env(container).items():
                if variable in secret_names or variable.startswith("UPLINK_SECRET_"):
                    assert "value" not in entry, (name, variable)
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}, (name, variable)
    for config_map in of_kind(docs, "ConfigMap"):
        for text in config_map["data"].values():
            assert not re.search(r"(?m)^\s*secret\s*=", text)
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"].get("secretTargetRef", []):
            assert set(ref) == {"parameter", "name", "key"}


def test_a_secret_in_the_router_rules_is_refused() -> None:
    rules = '[endpoint.crm]\nurl = "https://crm.example"\nsecret = "s3cr3t"\n'
    error = render_fails("--set-string", f"router.rules={rules}")
    assert "secret_env" in error


def test_every_variable_passed_is_one_uplink_reads(example: Path) -> None:
    declared = {name for variable in variables() for name in variable.names}
    for name, pod in pods(objects(render(example))):
        for container in pod["containers"]:
            passed = set(env(container))
            routers = {v for v in passed if v.startswith("UPLINK_SECRET_")}  # the rules' secret_env
            unread = passed - declared - routers - KAFKA_AUTH
            assert not unread, (name, sorted(unread))


def test_without_the_hook_the_ingress_creates_the_topics() -> None:
    docs = objects(render(EXAMPLES[0], "--set=topics.hook.enabled=false"))
    assert not of_kind(docs, "Job")
    (ingress,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-ingress")
    ]
    (container,) = ingress["spec"]["template"]["spec"]["containers"]
    assert env(container)["UPLINK_CREATE_TOPICS"]["value"] == "true"


def test_the_topics_hook_runs_uplink_topics_before_install_and_upgrade(example: Path) -> None:
    (job,) = of_kind(objects(render(example)), "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics"]
    assert env(container)["UPLINK_MESSAGES_PARTITIONS"]["value"] == "12"


def test_the_prometheus_rule_is_the_alert_rules_file() -> None:
    docs = objects(render(EXAMPLES[0]))
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    (monitor,) = of_kind(docs, "ServiceMonitor")
    jobs = {doc["metadata"]["labels"].get("uplink/job") for doc in of_kind(docs, "Service")} - {
        None
    }
    assert jobs == {f"uplink-{name}" for name in ["ingress", *WORKERS]}
    assert monitor["spec"]["jobLabel"] == "uplink/job"


def test_oauthbearer_passes_the_token_endpoint_and_the_client_secret_by_reference() -> None:
    oauth = [
        "--set=kafka.securityProtocol=SASL_SSL",
        "--set=kafka.sasl.mechanism=OAUTHBEARER",
        "--set=kafka.sasl.oauth.tokenUrl=https://idp.example/token",
        "--set=kafka.sasl.oauth.clientId=uplink",
        "--set=kafka.sasl.oauth.scope=kafka",
    ]
    mtls = CHART / "examples" / "strimzi-mtls.yaml"  # its CA, without its client certificate
    docs = objects(render(mtls, "--set=kafka.tls.clientCert.secretName=", *oauth))
    for name, pod in pods(docs):
        (container,) = pod["containers"]
        passed = env(container)
        assert passed["UPLINK_KAFKA_SASL_MECHANISM"]["value"] == "OAUTHBEARER", name
        assert passed["UPLINK_KAFKA_SASL_OAUTH_TOKEN_URL"]["value"] == "https://idp.example/token"
        secret = passed["UPLINK_KAFKA_SASL_OAUTH_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
        assert secret == {"name": "uplink", "key": "kafka-oauth-client-secret"}
        assert "UPLINK_KAFKA_SSL_CERTFILE" not in passed
    for scaled in of_kind(docs, "ScaledObject"):
        assert scaled["spec"]["triggers"][0]["metadata"]["sasl"] == "oauthbearer"
    for auth in of_kind(docs, "TriggerAuthentication"):
        parameters = {ref["parameter"] for ref in auth["spec"]["env"]}
        assert parameters == {"oauthTokenEndpointUri", "username", "scopes"}
        secrets = {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]}
        assert secrets == {"password", "ca"}
