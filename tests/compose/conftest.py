"""The compose tests' fixtures: the engine, and each stack brought up once for its module and
taken down after it, containers and volumes, whatever happened in between."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import pytest

from tests.compose.stack import PROJECT_LABEL, ROOT, Stack, scale

# docker-compose.yml scaled as issue 22's scenarios run it.
SINGLE = {"ingress": 3, "archive": 2, "media": 2, "router": 2}
# The three-broker profile: two ingress replicas behind the load balancer.
CLUSTER = {"ingress": 2}


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST where scripts/test set one, else one scripts/engine sets up for the session."""
    if os.environ.get("DOCKER_HOST"):
        yield os.environ["DOCKER_HOST"]
        return
    with tempfile.TemporaryDirectory(prefix="uplink-compose-engine-") as run_dir:
        engine = str(ROOT / "scripts" / "engine")
        started = subprocess.run(
            [engine, "up", run_dir], capture_output=True, text=True, timeout=600, check=False
        )
        assert started.returncode == 0, f"no container engine: {started.stderr}"
        try:
            yield started.stdout.strip()
        finally:
            subprocess.run([engine, "down", run_dir], timeout=120, check=True)


@pytest.fixture(scope="session")
def run_name() -> str:
    """A prefix for this session's compose projects: scripts/test's run, or this process's."""
    return os.environ.get("UPLINK_TEST_RUN") or f"uplink-test-{os.getpid()}"


def projects_of(docker_host: str, run_name: str) -> set[str]:
    """The compose projects of this run that still have a container, running or not."""
    client = docker.DockerClient(base_url=docker_host, version="1.41", timeout=120)
    try:
        found = client.containers.list(all=True, filters={"label": PROJECT_LABEL})
        return {
            c.labels[PROJECT_LABEL]
            for c in found
            if c.labels[PROJECT_LABEL].startswith(f"{run_name}-")
        }
    finally:
        client.close()


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(docker_host: str, run_name: str) -> Iterator[None]:
    """After the session, no container of its stacks, even where a teardown itself failed:
    what is left is taken down, and the session fails saying so."""
    yield
    left = projects_of(docker_host, run_name)
    for project in left:
        stack = Stack(project=project, docker_host=docker_host)
        try:
            stack.down("-v", "--timeout", "1")
        finally:
            stack.close()
    assert not left, f"compose projects left behind (now taken down): {sorted(left)}"


@contextmanager
def brought_up(stack: Stack, counts: dict[str, int]) -> Iterator[Stack]:
    """``stack`` up at ``counts``, then down with its volumes, also after a failed test or a
    failed ``up``; nothing of it may stay."""
    try:
        stack.up(*scale(counts))
        yield stack
    finally:
        # What each container said, for the failure a scenario may have left to explain.
        kept = stack.keep_logs(Path(tempfile.gettempdir()) / "uplink-compose-logs")
        print(f"compose: the containers' logs of {stack.project} are in {kept}")
        # The scenarios are over: no graceful stop to wait for.
        stack.down("-v", "--timeout", "1")
        left = stack.containers()
        stack.close()
        assert not left, f"containers left behind: {[c.name for c in left]}"


@pytest.fixture(scope="module")
def stack(docker_host: str, run_name: str) -> Iterator[Stack]:
    """docker-compose.yml, scaled as ``SINGLE``."""
    with brought_up(Stack(project=f"{run_name}-single", docker_host=docker_host), SINGLE) as up:
        yield up


@pytest.fixture(scope="module")
def cluster(docker_host: str, run_name: str) -> Iterator[Stack]:
    """docker-compose.yml with docker-compose.cluster.yml, scaled as ``CLUSTER``."""
    project = f"{run_name}-cluster"
    with brought_up(Stack(project=project, docker_host=docker_host, cluster=True), CLUSTER) as up:
        yield up
