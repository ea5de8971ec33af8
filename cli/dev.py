"""`uplink dev`: the whole pipeline on this machine, one process per part, stopped together.

The broker (local unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) runs first and stops last; the
ingress and each worker run as child processes of their own ``uplink`` verb, exactly as they
are deployed, in sessions of their own so a Ctrl-C reaches them once, from here, as SIGTERM.
A part that dies on its own stops everything: a dev pipeline that silently lost its archive
would be worse than none.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from consumers.router.rules import example_rules
from uplink.broker import free_port, kafka_broker
from uplink.exceptions import UplinkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevSettings:
    var_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8080
    kafka_port: int = 9092
    metrics_port: int = 9101  # archive, media, router on this and the next two; 0: free ports
    rules: Path = field(default_factory=example_rules)
    stop_timeout: float = 30.0  # per part, before it is killed
    log_format: str = "text"
    log_level: str = "INFO"


@dataclass
class Part:
    name: str
    argv: list[str]
    # Exit codes of a clean stop after SIGTERM. uvicorn re-raises the SIGTERM it handled once
    # its shutdown is complete, so the ingress ends with -SIGTERM (tests/ingress/test_shutdown.py).
    clean: tuple[int, ...] = (0,)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class DevError(UplinkError):
    pass


def parts(settings: DevSettings) -> list[Part]:
    """What runs, in start order: the ingress, then the archive, media and router workers."""
    var = settings.var_dir
    base = settings.metrics_port
    metrics = [free_port() for _ in range(3)] if base == 0 else [base, base + 1, base + 2]
    uplink = [
        sys.executable, "-m", "cli.main",
        "--log-level", settings.log_level, "--log-format", settings.log_format,
    ]  # fmt: skip
    return [
        Part(
            "ingress",
            [*uplink, "ingress", "--host", settings.host, "--port", str(settings.port)],
            clean=(0, -signal.SIGTERM),
        ),
        Part(
            "archive",
            [
                *uplink,
                "archive",
                "--archive-dir",
                str(var / "archive"),
                "--metrics-port",
                str(metrics[0]),
            ],
        ),
        Part(
            "media",
            [
                *uplink,
                "media",
                "--media-dir",
                str(var / "media"),
                "--metrics-port",
                str(metrics[1]),
            ],
        ),
        Part(
            "router",
            [*uplink, "router", "--rules", str(settings.rules), "--metrics-port", str(metrics[2])],
        ),
    ]


class Pipeline:
    """Starts the parts, waits until one dies or a stop is requested, then stops them all."""

    def __init__(self, settings: DevSettings, environ: Mapping[str, str]) -> None:
        self._settings = settings
        self._environ = environ
        self._parts = parts(settings)
        self._stop = False

    def request_stop(self, signum: int = 0, frame: FrameType | None = None) -> None:
        self._stop = True

    def run(self) -> int:
        settings = self._settings
        if not settings.rules.is_file():
            raise DevError(f"--rules: no rules file at {settings.rules}")
        self._validate()
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        with kafka_broker(
            self._environ, data_dir=settings.var_dir / "kafka", port=settings.kafka_port
        ) as bootstrap:
            env = {**self._environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
            self._create_topics(env)
            unclean: list[str] = []
            try:
                for part in self._parts:
                    part.process = subprocess.Popen(part.argv, env=env, start_new_session=True)
                self._banner(bootstrap)
                failed = self._watch()
            finally:
                unclean = self._stop_parts()
        if failed is not None:
            raise DevError(f"the {failed.name} exited on its own; everything was stopped")
        if unclean:
            # Its last batch may not be committed: the next run redoes it, but say so.
            raise DevError(f"not stopped cleanly: {', '.join(unclean)}")
        return 0

    def _validate(self) -> None:
        """Every part's settings, read from the environment as the part will read them: a bad
        value stops `uplink dev` here, naming the setting (ConfigError), before the broker
        starts, rather than as a part that exits on its own later."""
        from consumers.media.settings import MediaSettings
        from consumers.router.rules import load_rules
        from consumers.router.settings import RouterSettings
        from uplink.settings import IngressSettings, WorkerSettings

        environ = self._environ
        IngressSettings.from_env(environ)
        for worker in ("archive", "media", "router"):
            WorkerSettings.from_env(worker, environ)
        MediaSettings.from_env(environ, root=self._settings.var_dir / "media")
        RouterSettings.from_env(environ)
        load_rules(self._settings.rules, environ)

    def _create_topics(self, env: Mapping[str, str]) -> None:
        command = [sys.executable, "-m", "cli.main", "topics"]
        done = subprocess.run(command, env=dict(env), check=False)
        if done.returncode != 0:
            raise DevError("creating the topics failed (see above)")

    def _watch(self) -> Part | None:
        while not self._stop:
            for part in self._parts:
                assert part.process is not None
                if part.process.poll() is not None:
                    log.error("%s exited with %s", part.name, part.process.returncode)
                    return part
            time.sleep(0.2)  # a supervisor's poll, not a synchronisation
        return None

    def _stop_parts(self) -> list[str]:
        """SIGTERM to every part (they finish their batch and commit), the ingress first so no
        new push arrives; a part still running after the timeout is killed. Returns the parts
        that did not stop cleanly (killed, or a non-zero exit)."""
        running = [p for p in self._parts if p.process and p.process.poll() is None]
        for part in running:
            assert part.process is not None
            part.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._settings.stop_timeout
        unclean = []
        for part in running:
            assert part.process is not None
            try:
                code = part.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("the %s did not stop in time: killed", part.name)
                part.process.kill()
                part.process.wait()
                unclean.append(f"the {part.name} (killed after {self._settings.stop_timeout} s)")
                continue
            if code not in part.clean:
                log.error("the %s exited with %s on SIGTERM", part.name, code)
                unclean.append(f"the {part.name} (exit code {code})")
        return unclean

    def _banner(self, bootstrap: str) -> None:
        settings = self._settings
        var = settings.var_dir.resolve()
        url = f"http://{settings.host}:{settings.port}"
        if self._environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
            kafka = "(KAFKA_BOOTSTRAP_SERVERS: not started or stopped here)"
        else:
            kafka = f"(data in {var / 'kafka'})"
        print(
            f"""
uplink dev: the whole pipeline on this machine (Ctrl-C stops it, the broker last)
  Kafka      {bootstrap}  {kafka}
  ingress    {url}/v1/uplink   ({url}/healthz  /readyz  /metrics)
  archive    {var / "archive"}   (uplink archive cat FILE...)
  media      {var / "media"}
  router     rules in {settings.rules}
  workers    metrics on {", ".join(str(p.argv[-1]) for p in self._parts[1:])}
  try:       curl -s -XPOST -H 'content-type: application/json' \\
               --data-binary @tests/examples/text.json {url}/v1/uplink
""",
            flush=True,
        )


def run(settings: DevSettings, environ: Mapping[str, str]) -> int:
    pipeline = Pipeline(settings, environ)
    signal.signal(signal.SIGTERM, pipeline.request_stop)
    signal.signal(signal.SIGINT, pipeline.request_stop)
    return pipeline.run()
