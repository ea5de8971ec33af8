"""A local Apicurio Registry (a Quarkus application) from Maven Central, for the tests and dev.

Like the Kafka jars (uplink/broker/local.py), the registry's application tarball
(``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``) comes from Maven Central into a cache
outside the repository once; every start is then a plain ``java -jar quarkus-run.jar``. It needs
Java 21 or later, which need not be the ``java`` on PATH (the Kafka broker runs on 17): the JVMs
on the machine are searched for one. Storage is its default, an in-memory H2 database, so each
start is an empty registry. Readiness is its management interface's ``/health/ready``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from uplink.broker.local import free_port
from uplink.cache import (
    MAVEN_DEPENDENCY_PLUGIN,
    default_cache_dir,
    fetch_once,
    run_quietly,
    say,
    shown,
)
from uplink.exceptions import UplinkError
from uplink.resources import BlockingResource

log = logging.getLogger(__name__)

APICURIO_VERSION = "3.3.3"
MIN_JAVA = 21
_ARTIFACT = "io.apicurio:apicurio-registry-app:{version}:tar.gz:all"
_JVM_DIRS = (Path("/usr/lib/jvm"), Path("/usr/java"), Path("/opt/java"))
_VERSION_LINE = re.compile(r'version "(?P<major>\d+)(?:\.(?P<minor>\d+))?')


class RegistryServerError(UplinkError):
    """The local registry could not be fetched or started (no Java 21+, no Maven, a crash)."""


@dataclass(frozen=True)
class RegistryServerSettings:
    port: int = 8081
    management_port: int | None = None  # default: a free one
    cache_dir: Path = field(default_factory=default_cache_dir)
    version: str = APICURIO_VERSION
    java: str | None = None  # default: the newest Java 21+ found (java_21)
    heap: str = "512m"
    ready_timeout: float = 120.0

    @property
    def url(self) -> str:
        """The Confluent-compatible API: what UPLINK_SCHEMA_REGISTRY_URL names."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"


def java_major(java: str) -> int | None:
    """The major version of a ``java`` binary (``1.8`` → 8), None if it does not run."""
    try:
        result = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = _VERSION_LINE.search(result.stderr + result.stdout)
    if found is None:
        return None
    major = int(found["major"])
    return int(found["minor"] or 0) if major == 1 else major


def java_21(environ: dict[str, str] | None = None, roots: tuple[Path, ...] = _JVM_DIRS) -> str:
    """The newest ``java`` of version 21 or later: JAVA_HOME's, PATH's, or one installed under
    /usr/lib/jvm (and the like). Raises RegistryServerError naming what was found otherwise."""
    environ = dict(os.environ) if environ is None else environ
    candidates: list[str] = []
    if environ.get("JAVA_HOME"):
        candidates.append(str(Path(environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java", path=environ.get("PATH"))
    if on_path:
        candidates.append(on_path)
    for root in roots:
        if root.is_dir():
            candidates += sorted(str(p) for p in root.glob("*/bin/java"))
    seen: dict[str, int] = {}
    for candidate in candidates:
        real = os.path.realpath(candidate)
        if real not in seen and os.access(real, os.X_OK):
            major = java_major(real)
            if major is not None:
                seen[real] = major
    fitting = sorted(((major, path) for path, major in seen.items() if major >= MIN_JAVA))
    if not fitting:
        found = ", ".join(f"{path} ({major})" for path, major in seen.items()) or "none"
        raise RegistryServerError(
            f"the local schema registry (Apicurio) needs Java {MIN_JAVA} or later; found: {found}"
            " (install e.g. temurin-25-jdk, or set JAVA_HOME)"
        )
    return fitting[-1][1]


def fetch_app(cache_dir: Path, version: str = APICURIO_VERSION) -> Path:
    """The registry application, unpacked in the cache (fetched with Maven once per machine);
    returns its folder (``quarkus-run.jar`` inside)."""
    home = cache_dir / f"apicurio-registry-{version}"
    done = home / ".complete"
    if done.exists():
        return home
    if shutil.which("mvn") is None:
        raise RegistryServerError("the local schema registry needs Maven (`mvn`) to fetch it")

    def fetch() -> None:
        with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
            run_quietly(
                [
                    "mvn",
                    "-B",
                    "-q",
                    f"{MAVEN_DEPENDENCY_PLUGIN}:copy",
                    f"-Dartifact={_ARTIFACT.format(version=version)}",
                    f"-DoutputDirectory={scratch}",
                ],
                RegistryServerError,
                f"mvn could not fetch Apicurio Registry {version}",
                cwd=Path(scratch),
            )
            (tarball,) = Path(scratch).glob("*.tar.gz")
            shutil.rmtree(home, ignore_errors=True)
            with tarfile.open(tarball) as archive:
                archive.extractall(home, filter="data")
        done.touch()

    fetch_once(
        f"Apicurio Registry {version}",
        done,
        cache_dir / f".apicurio-{version}.lock",
        fetch,
        f"fetching Apicurio Registry {version} from Maven Central into {shown(cache_dir)} "
        "(first run only, about a minute)…",
    )
    return home


class LocalRegistry(BlockingResource):
    """One Apicurio Registry process on 127.0.0.1 (HTTP and management interface both):
    ``start()`` returns once ``/health/ready`` answers 200; ``stop()`` is safe twice."""

    def __init__(self, settings: RegistryServerSettings, log_file: Path | None = None) -> None:
        self.settings = settings
        self.management_port = settings.management_port or free_port()
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return self.settings.url

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        if self._process is not None:
            raise RegistryServerError("registry already started")
        settings = self.settings
        java = settings.java or java_21()
        home = fetch_app(settings.cache_dir, settings.version)
        environ = {
            **os.environ,
            "QUARKUS_HTTP_HOST": "127.0.0.1",
            "QUARKUS_HTTP_PORT": str(settings.port),
            "QUARKUS_MANAGEMENT_HOST": "127.0.0.1",
            "QUARKUS_MANAGEMENT_PORT": str(self.management_port),
            # Its access and audit log lines, one per request, say nothing a test needs.
            "QUARKUS_LOG_LEVEL": "WARN",
        }
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            [java, f"-Xmx{settings.heap}", "-XX:+UseSerialGC", "-jar", "quarkus-run.jar"],
            cwd=home,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=self._log if self._log is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._await_ready()
        except BaseException:
            self.stop()
            raise
        log.info("Apicurio Registry %s serving on %s", settings.version, self.url)

    def _await_ready(self) -> None:
        """Polls the management interface's readiness until it answers 200 or the process ends."""
        assert self._process is not None
        health = f"http://127.0.0.1:{self.management_port}/health/ready"
        deadline = time.monotonic() + self.settings.ready_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self._process.poll()
                if code is not None:
                    raise RegistryServerError(
                        f"Apicurio Registry exited with {code} while starting; port "
                        f"{self.settings.port} or {self.management_port} may be taken"
                        + (f"; its log: {self.log_file}" if self.log_file else "")
                    )
                try:
                    if client.get(health).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    raise RegistryServerError(
                        f"Apicurio Registry not ready within {self.settings.ready_timeout:.0f}s"
                    )
                # Polled, not slept on: each round asks the process and its health endpoint.
                time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGCONT)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """SIGSTOP: a registry that is down for its clients (connections time out)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)


def main() -> None:
    """``python -m tests.servers.registry --fetch-only``: what scripts/test runs."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.servers.registry")
    parser.add_argument("--fetch-only", action="store_true", help="fetch it, find Java, exit")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    settings = RegistryServerSettings(port=args.port)
    try:
        java = java_21()
        fetch_app(settings.cache_dir, settings.version)
    except RegistryServerError as exc:
        raise SystemExit(f"uplink: {exc}") from None
    if args.fetch_only:
        say(f"Apicurio Registry {settings.version} cached; it runs on {java}")
        return
    with LocalRegistry(settings):
        say(f"schema registry on {settings.url} (Ctrl-C stops it)")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
