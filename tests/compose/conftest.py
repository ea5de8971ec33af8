"""The engine the compose tests run on: DOCKER_HOST where scripts/test set one, else one that
scripts/engine sets up (podman's Docker API) for this session."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose.stack import ROOT


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
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


def fault_table() -> Path:
    """Where the scenarios' rows go (docs/compose.md quotes them)."""
    path = ROOT / "var" / "compose" / "faults.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
