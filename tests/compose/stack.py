"""docker-compose.yml brought up for real by scripts/compose, on the engine at DOCKER_HOST, as a
project of its own: its containers, its bucket and its archive as an operator sees them."""

from __future__ import annotations

import collections
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import docker
import orjson
from docker.models.containers import Container

ROOT = Path(__file__).resolve().parents[2]
LB = "http://127.0.0.1:8080"
S3 = "http://127.0.0.1:7070"
# The stack's archive flushes a quiet stream after this many seconds (the deployment's
# default is a minute): the tests wait for the last pushes' files.
FLUSH_INTERVAL = "3"
PROJECT_LABEL = "com.docker.compose.project"


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class Stack:
    project: str
    docker_host: str
    cluster: bool = False
    engine: docker.DockerClient = field(init=False, repr=False, compare=False)

    def environ(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.images(),
            "COMPOSE_PROJECT_NAME": self.project,
            "DOCKER_HOST": self.docker_host,
            "UPLINK_COMMIT_INTERVAL": FLUSH_INTERVAL,
        }

    def images(self) -> dict[str, str]:
        """The images the stack's first ``up`` chose (scripts/compose writes them down): a
        later ``up`` of the scenarios uses them as they are instead of checking every input
        of every image again."""
        chosen = ROOT / "var" / "compose" / self.project / "images.env"
        if not chosen.exists():
            return {}
        found = {}
        for line in chosen.read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = value.strip('"')
        return found

    def compose(self, action: str, *args: str, timeout: float = 1200) -> None:
        """``scripts/compose ACTION [--cluster] ARGS`` for this project; its output, on failure."""
        command = [str(ROOT / "scripts" / "compose"), action]
        if self.cluster:
            command.append("--cluster")
        result = subprocess.run(
            [*command, *args],
            cwd=ROOT,
            env=self.environ(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(
                f"{' '.join(command)} {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )

    def up(self, *args: str) -> None:
        self.compose("up", *args)

    def down(self, *args: str) -> None:
        self.compose("down", *args, timeout=300)

    def __post_init__(self) -> None:
        # One client for the stack's life: the containers it lists are driven through it.
        client = docker.DockerClient(base_url=self.docker_host, version="1.41", timeout=300)
        object.__setattr__(self, "engine", client)

    def close(self) -> None:
        self.engine.close()

    def containers(self, service: str | None = None) -> list[Container]:
        """This project's containers (of ``service``), running or not, by number."""
        labels = [f"{PROJECT_LABEL}={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        found = self.engine.containers.list(all=True, filters={"label": labels})
        return sorted(
            found, key=lambda c: int(c.labels.get("com.docker.compose.container-number", 0))
        )

    def keep_logs(self, under: Path) -> Path:
        """Every container's log, timestamped, into ``under/<project>/<container>.log``."""
        directory = under / self.project
        directory.mkdir(parents=True, exist_ok=True)
        for container in self.containers():
            (directory / f"{container.name}.log").write_bytes(
                container.logs(timestamps=True, stdout=True, stderr=True)
            )
        return directory

    def running(self, service: str) -> list[Container]:
        return [c for c in self.containers(service) if c.status == "running"]

    def archived(self) -> collections.Counter[str]:
        """How many times each messageId is in the bucket's archive, read as an operator does:
        ``uplink archive cat s3://uplink/archive`` from this host."""
        result = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "uplink"), "archive", "cat", "s3://uplink/archive"],
            env={
                **os.environ,
                "AWS_ENDPOINT_URL": S3,
                "AWS_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "uplink",
                "AWS_SECRET_ACCESS_KEY": "uplink-change-this-secret",
            },
            capture_output=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"uplink archive cat exited {result.returncode}: {result.stderr!r}")
        return collections.Counter(
            orjson.loads(line)["messageId"] for line in result.stdout.splitlines() if line
        )

    def await_archived(
        self, message_ids: set[str], timeout: float = 600
    ) -> collections.Counter[str]:
        """The archive once it holds every one of ``message_ids`` (or as it is at ``timeout``):
        the workers write a file per partition when it fills or the stream goes quiet."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.archived()
            if message_ids <= counts.keys() or time.monotonic() > deadline:
                return counts
            time.sleep(2)  # the archive says nothing when a file lands: read it again

    def archive_files(self) -> list[str]:
        """The archive's object keys, as the S3 service stores them (a file each)."""
        (s3,) = self.running("s3")
        code, output = s3.exec_run(["find", "/data/uplink/archive", "-type", "f"])
        if code != 0:
            raise StackError(f"listing the archive failed: {output!r}")
        return sorted(output.decode().split())


def scale(counts: dict[str, int]) -> Sequence[str]:
    return [arg for service, n in counts.items() for arg in ("--scale", f"{service}={n}")]
