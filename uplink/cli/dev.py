"""`uplink dev`: the whole pipeline on this machine, one process per part, stopped together.

The broker (local unless ``KAFKA_BOOTSTRAP_SERVERS`` is set) runs first and stops last; the
ingress and each worker run as child processes of their own ``uplink`` verb, exactly as they
are deployed, in sessions of their own so a Ctrl-C reaches them once, from here, as SIGTERM.
A part that dies on its own stops everything: a dev pipeline that silently lost its archive
would be worse than none.

The console is for the person who started it: the local broker's log goes to
``<var>/kafka/broker.log`` (its warnings and errors also to the console, as ``kafka: ...``); the
parts start once the broker's group and transaction coordinators answer, so their consumers and
transactional producers find them at once; and the banner, with a ``curl`` to try, comes last,
once every part answers: the ingress's /readyz, each worker's metrics port.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from consumers.router.rules import example_rules
from uplink.broker import free_port, kafka_broker
from uplink.broker.local import ConsoleFilter
from uplink.exceptions import UplinkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DevSettings:
    var_dir: Path = Path("var")
    host: str = "127.0.0.1"
    port: int = 8080
    kafka_port: int = 9092
    metrics_port: int = 9101  # archive, media, router on this and the next two; 0: free ports
    console_port: int = 8090  # the web console, on loopback; 0: a free port
    rules: Path = field(default_factory=example_rules)
    stop_timeout: float = 30.0  # per part, before it is killed
    kafka_timeout: float = 60.0  # until the broker's coordinators and the topics' leaders answer
    ready_timeout: float = 90.0  # until every part answers, once they are started
    log_format: str = "text"
    log_level: str = "INFO"


@dataclass
class Part:
    name: str
    argv: list[str]
    # Exit codes of a clean stop after SIGTERM. uvicorn re-raises the SIGTERM it handled once
    # its shutdown is complete, so the ingress on uvicorn ends with -SIGTERM; on granian with 0
    # (tests/ingress/test_shutdown.py).
    clean: tuple[int, ...] = (0,)
    # Where it answers once it is up: the ingress's /readyz (200 once its producer is
    # connected), a worker's metrics port (opened by the launcher once its consumers started).
    ready_url: str = ""
    ready_status: int | None = None  # None: any HTTP answer
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class DevError(UplinkError):
    pass


BROKER_LOG = "broker.log"  # in the broker's data directory, beside its server.properties


def local_url(host: str, port: int) -> str:
    """An http:// URL of ``port`` on ``host`` as a client on this machine reaches it: a server
    listening on every address (0.0.0.0, ::) is asked on loopback."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# The standard library's client, as httpx would log every poll at INFO; never through a proxy
# (the parts are on this machine).
_LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_status(url: str) -> int | str:
    """The status of a GET of ``url``, or why there was none."""
    try:
        with _LOCAL.open(url, timeout=2.0) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, garbled
        return f"{type(exc).__name__}: {exc}"


def parts(settings: DevSettings) -> list[Part]:
    """What runs, in start order: the ingress, the archive, media and router workers, then the
    console (on loopback, actions allowed: the pipeline is the developer's own)."""
    var = settings.var_dir
    base = settings.metrics_port
    metrics = [free_port() for _ in range(3)] if base == 0 else [base, base + 1, base + 2]
    console = settings.console_port or free_port()
    media = ["--media-dir", str(var / "media")]
    uplink = [
        sys.executable, "-m", "uplink.cli.main",
        "--log-level", settings.log_level, "--log-format", settings.log_format,
    ]  # fmt: skip
    return [
        Part(
            "ingress",
            [*uplink, "ingress", "--host", settings.host, "--port", str(settings.port)],
            clean=(0, -signal.SIGTERM),
            ready_url=f"{local_url(settings.host, settings.port)}/readyz",
            ready_status=200,
        ),
        *(
            Part(
                worker,
                [*uplink, worker, *where, "--metrics-port", str(port)],
                ready_url=f"{local_url('', port)}/metrics",
            )
            for (worker, where), port in zip(
                [
                    ("archive", ["--archive-dir", str(var / "archive")]),
                    ("media", ["--media-dir", str(var / "media")]),
                    ("router", ["--rules", str(settings.rules)]),
                ],
                metrics,
                strict=True,
            )
        ),
        Part(
            "console",
            [*uplink, "console", "--port", str(console), *media, "--allow-actions"],
            clean=(0, -signal.SIGTERM),  # uvicorn's, as the ingress's
            ready_url=f"{local_url('', console)}/healthz",
            ready_status=200,
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
        kafka_dir = settings.var_dir / "kafka"
        with kafka_broker(
            self._environ,
            data_dir=kafka_dir,
            port=settings.kafka_port,
            log_file=kafka_dir / BROKER_LOG,
            console=ConsoleFilter(prefix="kafka: "),
        ) as bootstrap:
            env = {**self._environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
            asyncio.run(self._prepare_kafka(env))
            unclean: list[str] = []
            failed: Part | None = None
            try:
                if not self._stop:  # else a Ctrl-C came while the broker was made ready
                    for part in self._parts:
                        part.process = subprocess.Popen(part.argv, env=env, start_new_session=True)
                    failed = self._until_ready()
                if failed is None and not self._stop:
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

    async def _prepare_kafka(self, env: Mapping[str, str]) -> None:
        """Before any part starts, what the parts would otherwise race a new broker for, each
        race an ERROR line on the console: the group and transaction coordinators answer (a new
        broker creates __consumer_offsets and __transaction_state at the first FindCoordinator
        and answers "not available" until they are loaded), and every topic a part reads or
        writes exists (what each part's topology creates, ``uplink.topology``), each partition
        served by its leader (a consumer asking for the offsets of one that is not yet logs
        NotLeaderForPartitionError)."""
        from consumers.router.rules import load_rules
        from consumers.router.settings import RouterSettings
        from uplink import topology
        from uplink.kafka import KafkaClients
        from uplink.settings import WorkerSettings, kafka_from_env, topics_from_env
        from uplink.topics import ensure_topics

        kafka, topics = kafka_from_env(env), topics_from_env(env)
        workers = [WorkerSettings.from_env(name, env) for name in ("archive", "media", "router")]
        router = RouterSettings.from_env(env)
        archive, media, routing = workers
        rules = load_rules(self._settings.rules, env)
        # What each part creates as it starts, all of it before any part starts.
        every = (
            topology.ingress(topics, kafka.max_request_size)
            | topology.archive(archive)
            | topology.media(media)
            | topology.router(routing, rules.topics, router.delay_topics)
            | topology.redeliveries(routing, router.delay_topics)
            | topology.redrive(archive)
            | topology.redrive(media)
            | topology.redrive(routing)
        )
        names = every.names
        # The router's transactional ids start with its prefix; with the local broker's single
        # partition of __transaction_state, any id's coordinator is every id's.
        transactional = router.transactional_prefix or routing.group
        keys = [(w.group, 0) for w in workers] + [(transactional, 1)]
        admin = KafkaClients(kafka).admin()
        consumer: AIOKafkaConsumer | None = None  # started where it is used: see served()

        async def coordinators() -> str | None:
            for key, kind in keys:  # kind: 0 a group's, 1 a transactional id's
                await admin.find_coordinator(key, kind)  # raises until it is loaded
            return None

        async def served() -> str | None:
            nonlocal consumer
            described = {t["topic"]: t for t in await admin.describe_topics(names)}
            missing = [
                name
                for name in names
                if (t := described.get(name)) is None
                or t["error_code"]
                or not t["partitions"]
                or any(p["error_code"] or p["leader"] < 0 for p in t["partitions"])
            ]
            if missing:
                return f"no leader yet for {', '.join(missing)}"
            # A leader in the metadata is not yet a partition served: the broker creates the
            # partitions' logs after announcing them (most of a second for a new pipeline's). Their
            # offsets, which a new consumer asks for first, say they are served: asked here, a
            # partition not yet served is retried quietly, where an offset reset logs an ERROR.
            partitions = [
                TopicPartition(name, p["partition"])
                for name in names
                for p in described[name]["partitions"]
            ]
            if consumer is None:
                # Started here, to be used at once: an aiokafka consumer stopped right after its
                # start, before its offset-reset task first ran, raises CancelledError.
                fresh = KafkaClients(kafka).consumer()
                try:
                    await fresh.start()
                except BaseException:
                    await fresh.stop()
                    raise
                consumer = fresh
            try:
                async with asyncio.timeout(5):
                    await consumer.beginning_offsets(partitions)
            except TimeoutError:
                return "partitions not served yet"
            return None

        try:
            await admin.start()
            await self._until(coordinators, "the broker's group and transaction coordinators")
            if not self._stop:
                await ensure_topics(kafka, topics, every.creates)
                await self._until(served, "the topics' partitions")
        except KafkaError as exc:
            raise DevError(f"Kafka at {kafka.bootstrap_servers}: {exc}") from exc
        finally:
            if consumer is not None:
                await consumer.stop()
            await admin.close()

    async def _until(self, ready: Callable[[], Awaitable[str | None]], what: str) -> None:
        """Poll ``ready`` (None once ready, else why not; a retriable KafkaError is a why not)
        until it is ready or a stop is requested, for at most ``kafka_timeout``."""
        timeout = self._settings.kafka_timeout
        deadline = time.monotonic() + timeout
        while not self._stop:
            try:
                why = await ready()
            except KafkaError as exc:
                if not exc.retriable:
                    raise
                why = f"{type(exc).__name__}: {exc}"
            if why is None:
                return
            if time.monotonic() > deadline:
                raise DevError(
                    f"{what} did not answer within {timeout:.0f} s ({why})" + self._see_broker_log()
                )
            await asyncio.sleep(0.1)  # a poll of the broker, bounded by the deadline

    def _see_broker_log(self) -> str:
        if self._environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
            return ""
        return f"; its log: {self._settings.var_dir / 'kafka' / BROKER_LOG}"

    def _until_ready(self) -> Part | None:
        """Until every part answers where it answers once it is up (a part that exits first is
        returned, as from ``_watch``; a stop request returns None); raises DevError naming the
        parts that did not come up within the timeout."""
        settings = self._settings
        waiting = list(self._parts)
        last: dict[str, str] = {}
        deadline = time.monotonic() + settings.ready_timeout
        while waiting and not self._stop:
            for part in list(waiting):
                assert part.process is not None
                if part.process.poll() is not None:
                    log.error("%s exited with %s", part.name, part.process.returncode)
                    return part
                status = _http_status(part.ready_url)
                if isinstance(status, int) and part.ready_status in (None, status):
                    waiting.remove(part)
                else:
                    last[part.name] = f"{part.ready_url}: {status}"
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"the {p.name} ({last.get(p.name, '?')})" for p in waiting)
                raise DevError(
                    f"not up within {settings.ready_timeout:.0f} s: {names}; everything was stopped"
                )
            if waiting:
                time.sleep(0.1)  # a poll of the parts' ports, bounded by the deadline
        return None

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
        from uplink.settings import IngressSettings

        settings = self._settings
        var = settings.var_dir.resolve()
        url = local_url(settings.host, settings.port)
        if self._environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
            kafka = "(KAFKA_BOOTSTRAP_SERVERS: not started or stopped here)"
        else:
            kafka = f"(data and {BROKER_LOG} in {var / 'kafka'})"
        meta = ""
        if IngressSettings.from_env(self._environ).meta.webhook:
            meta = f"\n  Meta       {url}/v1/meta   (Meta's webhook, signed with the app secret)"
        print(
            f"""
uplink dev: the whole pipeline on this machine is up (Ctrl-C stops it, the broker last)
  Kafka      {bootstrap}  {kafka}
  ingress    {url}/v1/uplink   ({url}/healthz  /readyz  /metrics){meta}
  archive    {var / "archive"}   (uplink archive cat FILE...)
  media      {var / "media"}
  router     rules in {settings.rules}
  workers    metrics on {", ".join(str(p.argv[-1]) for p in self._parts[1:4])}
  console    {self._parts[4].ready_url.removesuffix("healthz")}   (dead letters, traces, chats)
  try:       {self._curl(url)}
""",
            flush=True,
        )

    def _curl(self, url: str) -> str:
        """A command that posts a fresh text push from any directory and shows the answer and
        its status (``... 200``), shell-quoted (the JSON holds no single quote)."""
        from uplink.settings import IngressSettings

        push = {
            "messageId": uuid.uuid4().hex,
            "businessPhone": "6395110022481",
            "from": {"phone": "91856321412"},
            "message": {"type": "text", "text": {"body": "Hello from uplink dev"}},
            "timestamp": int(time.time()),
        }
        # The token stays in the environment: the shell puts it in, the banner does not show it.
        auth = IngressSettings.from_env(self._environ).token is not None
        return (
            "curl -sS -w ' %{http_code}\\n' -H 'content-type: application/json'"
            + (' -H "authorization: Bearer $UPLINK_TOKEN"' if auth else "")
            + f" {url}/v1/uplink \\\n               --data-binary '{orjson.dumps(push).decode()}'"
        )


def run(settings: DevSettings, environ: Mapping[str, str]) -> int:
    pipeline = Pipeline(settings, environ)
    signal.signal(signal.SIGTERM, pipeline.request_stop)
    signal.signal(signal.SIGINT, pipeline.request_stop)
    return pipeline.run()
