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

from tests.compose.runs import PREFIX, alive, run_name, run_of
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
def run() -> str:
    """A prefix for this session's compose projects: scripts/test's run, or this process's."""
    return os.environ.get("UPLINK_TEST_RUN") or run_name()


def projects_of(docker_host: str, prefix: str) -> set[str]:
    """The compose projects named ``prefix…`` that still have a container, running or not."""
    client = docker.DockerClient(base_url=docker_host, version="1.41", timeout=120)
    try:
        found = client.containers.list(all=True, filters={"label": PROJECT_LABEL})
        return {
            c.labels[PROJECT_LABEL] for c in found if c.labels[PROJECT_LABEL].startswith(prefix)
        }
    finally:
        client.close()


def take_down(docker_host: str, projects: set[str]) -> None:
    """Each project down with its volumes (as the three-broker profile: its files name every
    service either stack has)."""
    for project in sorted(projects):
        stack = Stack(project=project, docker_host=docker_host, cluster=True)
        try:
            stack.down("-v", "--timeout", "1")
        finally:
            stack.close()


@pytest.fixture(scope="session")
def nothing_left_behind(docker_host: str, run: str) -> Iterator[None]:
    """Before the session's first stack, the stacks of runs that died without taking theirs
    down (a killed session leaves them up on the engine, holding the host ports); after the
    session, no container of its own stacks, even where a teardown itself failed: what is left
    is taken down, and the session fails saying so."""
    dead = {p for p in projects_of(docker_host, PREFIX) if not alive(run_of(p))}
    if dead:
        print(f"compose: taking down the stacks of runs that are gone: {sorted(dead)}")
        take_down(docker_host, dead)
    yield
    left = projects_of(docker_host, f"{run}-")
    take_down(docker_host, left)
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
def stack(docker_host: str, run: str, nothing_left_behind: None) -> Iterator[Stack]:
    """docker-compose.yml, scaled as ``SINGLE``."""
    with brought_up(Stack(project=f"{run}-single", docker_host=docker_host), SINGLE) as up:
        yield up


@pytest.fixture(scope="module")
def cluster(docker_host: str, run: str, nothing_left_behind: None) -> Iterator[Stack]:
    """docker-compose.yml with docker-compose.cluster.yml, scaled as ``CLUSTER``."""
    project = f"{run}-cluster"
    with brought_up(Stack(project=project, docker_host=docker_host, cluster=True), CLUSTER) as up:
        yield up
