"""docker-compose.yml and the Dockerfile hold together: what `docker-compose config` resolves is
the deployment docs/deployment.md describes, and every setting it passes is one the code reads.

No Docker engine is needed: `docker-compose config` only parses, interpolates and validates.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from consumers.router.rules import example_rules
from consumers.runtime.metrics import WorkerMetrics
from ingress.app import create_app
from tests.conftest import Server, wait_ready
from tests.servers.kafka import DEFAULT_IMAGE
from tests.servers.registry import APICURIO_VERSION, LocalRegistry
from uplink.broker import free_port
from uplink.broker.local import KAFKA_VERSION
from uplink.cli.main import build_parser
from uplink.metrics import MetricsServer
from uplink.settings import IngressSettings, KafkaSettings

ROOT = Path(__file__).resolve().parents[1]
UPLINK = ["topics", "ingress", "archive", "media", "router", "console"]  # the uplink image's
WORKERS = {
    "archive": ["archive", "--archive-dir"],
    "media": ["media", "--media-dir"],
    "router": ["router", "--rules"],
}
PACKAGES = ["uplink", "ingress", "consumers", "schemas"]


def compose_config(*files: str, **environ: str) -> dict[str, Any]:
    """The file (or ``files``, layered) as Compose resolves it, with ``environ`` as the shell's
    variables."""
    command = shutil.which("docker-compose")
    assert command, (
        "docker-compose is needed to validate the compose file: apt-get install docker-compose"
    )
    shell = {k: v for k, v in os.environ.items() if not k.startswith(("UPLINK_", "KAFKA_"))}
    result = subprocess.run(
        [command, *(f"-f{name}" for name in files or ["docker-compose.yml"]), "config"],
        cwd=ROOT,
        env={**shell, **environ},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config()


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = config["services"]
    return found


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    """Volumes in either of the forms Compose prints (v1 strings, v2 mappings)."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found.append(Mount(source, target, mode == ["ro"]))
        else:
            found.append(
                Mount(volume["source"], volume["target"], bool(volume.get("read_only", False)))
            )
    return found


def test_every_service_of_the_contract_is_there(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "lb", "registry", "s3", *UPLINK}


def test_workers_and_ingress_scale_no_fixed_names_no_host_ports(
    services: dict[str, dict[str, Any]],
) -> None:
    # `--scale archive=3` (or ingress=3) fails on a fixed container_name or a published port.
    for name in [*WORKERS, "ingress"]:
        assert "container_name" not in services[name], name
        assert not services[name].get("ports"), name
    assert not [name for name, service in services.items() if "container_name" in service]


def test_the_load_balancer_publishes_8080_and_checks_every_ingress_replica(
    services: dict[str, dict[str, Any]],
) -> None:
    lb = services["lb"]
    assert [str(p["published"]) for p in lb["ports"]] == ["8080"]
    (mount,) = lb["volumes"]  # "source:target:ro" as docker-compose 1.x resolves it
    source, target, *_ = mount.split(":") if isinstance(mount, str) else (
        mount["source"], mount["target"]
    )  # fmt: skip
    config = Path(source)
    assert config.resolve() == ROOT / "deploy" / "haproxy.cfg"
    assert target == "/usr/local/etc/haproxy/haproxy.cfg"
    text = config.read_text()
    ingress = services["ingress"]
    port = ingress["command"][ingress["command"].index("--port") + 1]
    # Every replica by the engine's DNS, health-checked on the ingress's readiness endpoint.
    assert f"server-template ingress 12 ingress:{port} check resolvers engine" in text
    # The resolver the engine put in /etc/resolv.conf: 127.0.0.11 is Docker's alone.
    assert "parse-resolv-conf" in text
    assert not re.search(r"^\s*nameserver\b.*127\.0\.0\.11", text, re.MULTILINE)
    assert "option httpchk GET /readyz" in text
    assert "bind :8080" in text


def test_the_console_is_published_on_loopback_only_and_needs_its_token(
    services: dict[str, dict[str, Any]],
) -> None:
    console = services["console"]
    [port] = console["ports"]  # docker-compose 1.x resolves it as "host_ip:published:target"
    assert port.removesuffix("/tcp") == "127.0.0.1:8090:8090"
    assert console["environment"]["UPLINK_CONSOLE_TOKEN"]
    args = build_parser().parse_args(console["command"])
    assert (args.host, args.port, args.allow_actions) == ("0.0.0.0", 8090, False)


def test_uplink_services_run_one_image_built_from_the_dockerfile(
    services: dict[str, dict[str, Any]],
) -> None:
    images = set()
    for name in UPLINK:
        build = services[name]["build"]
        assert Path(build["context"]).resolve() == ROOT, name
        assert build.get("dockerfile", "Dockerfile") == "Dockerfile", name
        images.add(services[name]["image"])
    assert len(images) == 1
    assert (ROOT / "Dockerfile").is_file()


def test_each_worker_runs_its_verb_with_its_flag(services: dict[str, dict[str, Any]]) -> None:
    for name, verb_and_flag in WORKERS.items():
        command = services[name]["command"]
        assert command[:2] == verb_and_flag, name
        assert len(command) == 3, name
    assert services["router"]["command"][2] == "/etc/uplink/rules.toml"
    assert services["topics"]["command"] == ["topics"]
    assert services["ingress"]["command"][0] == "ingress"


def test_the_cli_accepts_the_commands_it_already_has(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    for name in UPLINK:
        args = parser.parse_args(services[name]["command"])
        assert args.verb == name
    assert parser.parse_args(services["archive"]["command"]).archive_dir == "s3://uplink/archive"


def test_archive_and_media_live_in_the_s3_service_s_bucket(
    config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    named = set(config["volumes"])
    s3 = services["s3"]
    assert Path(s3["build"]["context"]).resolve() == ROOT / "deploy" / "versitygw"
    command = s3["command"]
    port = command[command.index("--port") + 1].rsplit(":", 1)[1]
    [data] = mounts(s3)
    assert data.source in named and data.target == command[-1]
    # `uplink archive cat s3://…` from the operator's host, and from no other.
    assert s3["ports"] == [f"127.0.0.1:{port}:{port}/tcp"]
    buckets = s3["environment"]["UPLINK_S3_BUCKETS"].split()
    for name, prefix in [("archive", "archive"), ("media", "media")]:
        # One bucket for every container of the group (and of other hosts): no shared volume.
        assert services[name]["command"][2] == f"s3://{buckets[0]}/{prefix}", name
        assert not mounts(services[name]), name
        env = services[name]["environment"]
        assert env["AWS_ENDPOINT_URL"] == f"http://s3:{port}", name
        assert env["AWS_ACCESS_KEY_ID"] == s3["environment"]["ROOT_ACCESS_KEY"], name
        assert env["AWS_SECRET_ACCESS_KEY"] == s3["environment"]["ROOT_SECRET_KEY"], name
        assert services[name]["depends_on"]["s3"] == {"condition": "service_started"}, name
    [kafka_data] = mounts(services["kafka"])
    assert kafka_data.source in named


def test_the_s3_keys_come_from_the_shell() -> None:
    configured = compose_config(UPLINK_S3_ACCESS_KEY="ops", UPLINK_S3_SECRET_KEY="s3cret-s3")
    services = configured["services"]
    assert services["s3"]["environment"]["ROOT_SECRET_KEY"] == "s3cret-s3"
    assert services["archive"]["environment"]["AWS_SECRET_ACCESS_KEY"] == "s3cret-s3"
    assert services["media"]["environment"]["AWS_ACCESS_KEY_ID"] == "ops"


def test_the_router_reads_the_example_rules_read_only(services: dict[str, dict[str, Any]]) -> None:
    [rules] = mounts(services["router"])
    assert Path(rules.source).resolve() == example_rules()
    assert rules.target == services["router"]["command"][2]
    assert rules.read_only


def test_start_order_waits_for_a_healthy_broker_and_the_topics(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["topics"].get("restart", "no") == "no"  # one shot
    for name in ["ingress", *WORKERS]:
        stored = {"s3": {"condition": "service_started"}} if name in {"archive", "media"} else {}
        assert services[name]["depends_on"] == {
            "kafka": {"condition": "service_healthy"},
            "topics": {"condition": "service_completed_successfully"},
            **stored,
            "registry": {"condition": "service_healthy"},
        }, name
        assert services[name]["restart"] == "unless-stopped", name


def test_healthchecks_ask_the_right_port(services: dict[str, dict[str, Any]]) -> None:
    assert "/dev/tcp/127.0.0.1/9092" in " ".join(services["kafka"]["healthcheck"]["test"])
    assert "/dev/tcp/127.0.0.1/9000" in " ".join(services["registry"]["healthcheck"]["test"])
    ingress = services["ingress"]
    port = ingress["command"][ingress["command"].index("--port") + 1]
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(ingress["healthcheck"]["test"])
    for name in WORKERS:
        metrics_port = services[name]["environment"]["UPLINK_METRICS_PORT"]
        check = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{metrics_port}/metrics" in check, name


async def run_healthcheck(test: list[str], address: str) -> int:
    """A compose healthcheck's command (the ``CMD-SHELL`` form: podman's Docker API splits a
    ``CMD`` form's arguments at spaces), aimed at ``address`` instead."""
    assert test[0] == "CMD-SHELL"
    (script,) = test[1:]
    script = script.replace("$$", "$")  # Compose's escape, as the engine receives it
    host, port = address.rsplit(":", 1)
    command = re.sub(r"127\.0\.0\.1:\d+", address, script)
    command = re.sub(r"/dev/tcp/127\.0\.0\.1/\d+", f"/dev/tcp/{host}/{port}", command)
    assert command != script, "the healthcheck names no 127.0.0.1 address"
    if command.startswith("python "):  # the image's interpreter; here, this one (stdlib only)
        command = shlex.quote(sys.executable) + command.removeprefix("python")
    process = await asyncio.create_subprocess_shell(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    async with asyncio.timeout(60):
        return await process.wait()


@pytest.mark.anyio
async def test_the_ingress_healthcheck_passes_only_while_ready(
    services: dict[str, dict[str, Any]], serve: Server, ingress_settings: IngressSettings
) -> None:
    test = services["ingress"]["healthcheck"]["test"]
    url = await serve(create_app(ingress_settings))
    async with httpx.AsyncClient() as client:
        await wait_ready(client, url)
    assert await run_healthcheck(test, url.removeprefix("http://")) == 0

    nowhere = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    unready = await serve(create_app(replace(ingress_settings, kafka=nowhere)))
    assert await run_healthcheck(test, unready.removeprefix("http://")) != 0


@pytest.mark.kafka
@pytest.mark.anyio
async def test_the_broker_healthcheck_passes_only_where_kafka_answers(
    services: dict[str, dict[str, Any]], kafka_bootstrap: str
) -> None:
    test = services["kafka"]["healthcheck"]["test"]
    assert await run_healthcheck(test, kafka_bootstrap.split(",")[0]) == 0
    # Something listening that is not Kafka (an HTTP server), and nothing listening.
    port = free_port()
    async with MetricsServer(WorkerMetrics("archive").registry, port, host="127.0.0.1"):
        assert await run_healthcheck(test, f"127.0.0.1:{port}") != 0
    assert await run_healthcheck(test, f"127.0.0.1:{port}") != 0


@pytest.mark.registry
@pytest.mark.anyio
async def test_the_registry_healthcheck_asks_its_readiness(
    services: dict[str, dict[str, Any]], own_registry: Callable[[int], LocalRegistry]
) -> None:
    test = services["registry"]["healthcheck"]["test"]
    registry = own_registry(free_port())
    assert await run_healthcheck(test, f"127.0.0.1:{registry.management_port}") == 0
    registry.stop()
    assert await run_healthcheck(test, f"127.0.0.1:{registry.management_port}") != 0


@pytest.mark.anyio
async def test_the_worker_healthcheck_asks_the_metrics_server(
    services: dict[str, dict[str, Any]],
) -> None:
    port = free_port()
    metrics = WorkerMetrics("archive")
    async with MetricsServer(metrics.registry, port, host="127.0.0.1"):  # as the launcher serves
        assert (
            await run_healthcheck(services["archive"]["healthcheck"]["test"], f"127.0.0.1:{port}")
            == 0
        )
    assert (
        await run_healthcheck(services["archive"]["healthcheck"]["test"], f"127.0.0.1:{port}") != 0
    )


def test_kafka_is_kraft_at_the_tested_version_and_reachable_as_configured(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    # The image the tests' container broker runs by default, at the local broker's version.
    assert kafka["image"] == DEFAULT_IMAGE == f"apache/kafka:{KAFKA_VERSION}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "/var/lib/kafka/data" in [m.target for m in mounts(kafka)] == [env["KAFKA_LOG_DIRS"]]
    advertised = {
        listener.partition("://")[2] for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for name in UPLINK:
        bootstrap = services[name]["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
        assert set(bootstrap.split(",")) <= advertised, name
        assert bootstrap.partition(":")[0] in services  # a service name on the compose network


def test_the_cluster_profile_is_three_kraft_nodes_replicating_to_three() -> None:
    services = compose_config("docker-compose.yml", "docker-compose.cluster.yml")["services"]
    nodes = {name: service for name, service in services.items() if name.startswith("kafka")}
    assert sorted(nodes) == ["kafka", "kafka-2", "kafka-3"]
    envs = [node["environment"] for node in nodes.values()]
    assert {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs} == {
        "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093"
    }
    assert sorted(env["KAFKA_NODE_ID"] for env in envs) == ["1", "2", "3"]
    assert {node["image"] for node in nodes.values()} == {f"apache/kafka:{KAFKA_VERSION}"}
    for env in envs:
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "2"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    # One volume each: a node's log is its own.
    assert len({mounts(node)[0].source for node in nodes.values()}) == 3
    for name in UPLINK:
        env = services[name]["environment"]
        assert env["UPLINK_REPLICATION_FACTOR"] == "3", name
        assert set(env["KAFKA_BOOTSTRAP_SERVERS"].split(",")) == {
            "kafka:9092",
            "kafka-2:9092",
            "kafka-3:9092",
        }, name
        assert set(nodes) <= set(services[name]["depends_on"]), name


def test_every_variable_passed_is_one_the_code_reads(services: dict[str, dict[str, Any]]) -> None:
    source = "\n".join(
        path.read_text() for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    )
    read = set(re.findall(r"\"((?:UPLINK|KAFKA|AWS)_[A-Z_0-9]+)\"", source))
    assert "UPLINK_TOKEN" in read and "KAFKA_BOOTSTRAP_SERVERS" in read  # the scan works
    for name in UPLINK:
        unread = set(services[name]["environment"]) - read
        assert not unread, f"{name} passes variables no code reads: {sorted(unread)}"


def test_the_token_comes_from_the_shell_and_defaults_to_none(
    services: dict[str, dict[str, Any]],
) -> None:
    assert services["ingress"]["environment"]["UPLINK_TOKEN"] == ""
    configured = compose_config(UPLINK_TOKEN="s3cret")
    assert configured["services"]["ingress"]["environment"]["UPLINK_TOKEN"] == "s3cret"


def dockerfile_stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined), split at each FROM; the
    first list holds what comes before the first FROM (its global ARGs)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages[1:]


def dockerfile_args() -> dict[str, str]:
    """The global ARGs (before the first FROM) and their defaults."""
    text = (ROOT / "Dockerfile").read_text().split("\nFROM ", 1)[0]
    return dict(
        line.split(None, 1)[1].partition("=")[::2]
        for line in text.splitlines()
        if line.upper().startswith("ARG ")
    )


def test_the_image_runs_uplink_as_a_user_on_python_311_slim() -> None:
    stages = dockerfile_stages()
    final = stages[-1]
    # Both stages on one base: python:3.11-slim, unless a build says otherwise (scripts/image-check
    # on a machine that cannot pull it).
    assert dockerfile_args() == {"PYTHON_IMAGE": "python:3.11-slim"}
    assert all(stage[0].split()[1] == "${PYTHON_IMAGE}" for stage in stages)
    [user] = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert user not in {"root", "0"}
    [entrypoint] = [line for line in final if line.upper().startswith("ENTRYPOINT ")]
    assert entrypoint == 'ENTRYPOINT ["uplink"]'


def test_the_files_the_dockerfile_copies_build_the_whole_package(tmp_path: Path) -> None:
    copied = [
        source
        for line in dockerfile_stages()[0]
        if line.upper().startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", "var", ".pytest_cache", ".mypy_cache"} <= ignored
    assert not ignored & set(copied)
    context = tmp_path / "context"
    for source in copied:
        if (ROOT / source).is_dir():
            shutil.copytree(
                ROOT / source, context / source, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            context.mkdir(exist_ok=True)
            shutil.copy(ROOT / source, context / source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(context),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("uplink-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        [entry_points] = [name for name in names if name.endswith("entry_points.txt")]
        assert "uplink = uplink.cli.main:main" in archive.read(entry_points).decode()
    assert "consumers/router/example_rules.toml" in names  # `uplink dev` runs it by default
    for package in PACKAGES:
        assert f"{package}/__init__.py" in names
    assert "schemas/push.avsc" in names
    assert any(name.startswith("schemas/_records.") and name.endswith(".so") for name in names)
    # Every module of the tree is in the image.
    modules = {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
    }
    assert modules <= names


def test_the_build_stage_compiles_and_the_image_keeps_no_compiler() -> None:
    build, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    [compiler] = [n for n, line in enumerate(build) if "apt-get install" in line and "gcc" in line]
    [install] = [n for n, line in enumerate(build) if "pip install ." in line]
    assert compiler < install  # schemas/_records.c is built by pip install
    assert not any("gcc" in line for line in final)


def test_the_registry_is_the_tested_apicurio_and_every_uplink_service_uses_it(
    services: dict[str, dict[str, Any]],
) -> None:
    registry = services["registry"]
    assert registry["image"] == f"apicurio/apicurio-registry:{APICURIO_VERSION}"
    assert registry["environment"]["APICURIO_STORAGE_KIND"] == "kafkasql"
    assert registry["environment"]["APICURIO_KAFKASQL_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert registry["ports"] == ["127.0.0.1:8081:8080/tcp"]  # the schema tools on this host
    for name in UPLINK:
        url = services[name]["environment"]["UPLINK_SCHEMA_REGISTRY_URL"]
        assert url == "http://registry:8080/apis/ccompat/v7", name
    # Empty in the shell: no registry, single-object encoding.
    plain = compose_config(UPLINK_SCHEMA_REGISTRY_URL="")
    assert plain["services"]["ingress"]["environment"]["UPLINK_SCHEMA_REGISTRY_URL"] == ""
