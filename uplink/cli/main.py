"""The ``uplink`` command: one verb per process kind. Settings are read here, at the edge."""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from aiokafka.errors import KafkaError

from uplink import logs
from uplink.exceptions import ConfigError, KafkaUnavailable, UplinkError
from uplink.settings import LogSettings, WorkerSettings

if TYPE_CHECKING:
    from uplink.console import ConsoleSettings

log = logging.getLogger("uplink")


def _broker(args: argparse.Namespace) -> int:
    from uplink.broker import BrokerSettings, LocalBroker, fetch_jars

    settings = BrokerSettings(
        port=args.port, controller_port=args.controller_port, data_dir=Path(args.data_dir)
    )
    if args.fetch_only:
        print(fetch_jars(settings.cache_dir, settings.kafka_version))
        return 0
    if args.nodes != 1:
        return _cluster(args)
    broker = LocalBroker(settings)

    def stop(signum: int, frame: FrameType | None) -> None:
        broker.terminate()  # the main thread's wait() returns once Kafka has shut down

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with broker:
        print(f"Kafka serving on {broker.bootstrap_servers} (data in {settings.data_dir})")
        sys.stdout.flush()
        broker.wait()
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from uplink.broker.cluster import ClusterSettings, LocalCluster

    if args.controller_port is not None:
        raise ConfigError("--controller-port", "a cluster's ports follow --port (see --help)")
    settings = ClusterSettings(nodes=args.nodes, port=args.port, data_dir=Path(args.data_dir))
    cluster = LocalCluster(settings)
    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with cluster:
        print(
            f"Kafka cluster of {args.nodes} nodes serving on {cluster.bootstrap_servers} "
            f"(data in {settings.data_dir}/node-*)"
        )
        sys.stdout.flush()
        while not stopping.wait(0.5) and cluster.running:
            pass
        # Every node at once, bounded: a node whose controlled shutdown waits for a quorum that
        # is going away too is killed after 45 s (its log recovers at the next start).
        cluster.stop(timeout=45)
    return 0


def _ingress(args: argparse.Namespace) -> int:
    import asyncio

    from uplink.refusals import diagnose
    from uplink.settings import IngressSettings

    # Validated here, before any worker process starts; each builds its own from the same
    # environment (ingress.app.app_from_env, ingress.rsgi.app_from_env): the servers' factories
    # take no arguments.
    settings = IngressSettings.from_env(args.environ)
    # Refused credentials stop it here (exit 78); a broker that does not answer yet does not:
    # the ingress starts and answers 503 until it does.
    refused = asyncio.run(diagnose(settings.kafka))
    if refused is not None:
        raise refused
    # In-flight pushes get their answer before the producer is flushed and closed.
    grace = int(settings.produce_timeout) + 5
    if args.server == "granian":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces, Loops

        Granian(
            "ingress.rsgi:app_from_env",
            factory=True,
            address=args.host,
            port=args.port,
            interface=Interfaces.RSGI,
            workers=args.workers,
            loop=Loops.uvloop,
            http=HTTPModes.http1,
            websockets=False,
            log_dictconfig=args.log_config,
            log_access=args.access_log,
            workers_kill_timeout=grace,
        ).serve()
        return 0
    import uvicorn

    uvicorn.run(
        "ingress.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=args.access_log,
        log_config=args.log_config,
        timeout_graceful_shutdown=grace,
    )
    return 0


def _dev(args: argparse.Namespace) -> int:
    from consumers.router.rules import example_rules
    from consumers.router.settings import RouterSettings
    from uplink.cli import dev

    rules = RouterSettings.from_env(args.environ, rules=args.rules).rules

    settings = dev.DevSettings(
        var_dir=Path(args.var_dir),
        host=args.host,
        port=args.port,
        kafka_port=args.kafka_port,
        metrics_port=args.metrics_port,
        console_port=args.console_port,
        rules=Path(rules) if rules else example_rules(),
        log_format=args.log_format,
        log_level=args.log_level,
    )
    return dev.run(settings, args.environ)


def console_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ConsoleSettings:
    """The settings ``uplink console ARGV...`` serves with, in ``environ``."""
    args = build_parser().parse_args(["console", *argv])
    args.environ = dict(environ)
    return _console_settings(args)


def _console_settings(args: argparse.Namespace) -> ConsoleSettings:
    from consumers.media.settings import MediaSettings
    from uplink.cli.operate import groups_option, router_outputs
    from uplink.console import ConsoleSettings
    from uplink.s3.settings import location
    from uplink.settings import IngressSettings
    from uplink.variables import declaration

    environ = args.environ
    # The media store the media worker writes to: --media-dir, else its UPLINK_MEDIA_DIR.
    media_dir = declaration(MediaSettings, "root")
    media = args.media_dir or media_dir.read(environ)
    where = "--media-dir" if args.media_dir else media_dir.name
    return ConsoleSettings.from_env(
        environ,
        host=args.host,
        port=args.port,
        allow_actions=args.allow_actions,
        media=location(media, where, environ) if media else None,
        ingress_token=declaration(IngressSettings, "token").read(environ),
        groups={**ConsoleSettings().groups, **(groups_option(args.group) or {})},
        # Where the trace looks for the router's copies: the settings `uplink trace` reads.
        router_outputs=tuple(router_outputs(environ)),
    )


def _console(args: argparse.Namespace) -> int:
    import uvicorn

    from uplink.console import console_app

    settings = _console_settings(args)
    uvicorn.run(
        console_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=False,
        log_config=args.log_config,
    )
    return 0


def _archive(args: argparse.Namespace) -> int:
    if args.action == "cat":
        return _archive_cat(args)
    if args.action == "replay":
        return _archive_replay(args)
    from consumers.archive.settings import COMMITS, ArchiveSettings
    from uplink.cli import workers
    from uplink.cli.launcher import launch

    archive = ArchiveSettings.from_env(
        args.environ,
        args.archive_dir,
        max_records=args.max_records,
        codec=args.codec,
        verify=args.verify,
        work_dir=Path(args.work_dir) if args.work_dir else None,
    )
    settings = WorkerSettings.from_env(
        "archive",
        args.environ,
        COMMITS,
        **({"commit_interval": args.flush_interval} if args.flush_interval else {}),
        **({"metrics_port": args.metrics_port} if args.metrics_port else {}),
    )
    return launch(lambda: workers.archive(settings, archive))


def _media(args: argparse.Namespace) -> int:
    from consumers.media.settings import COMMITS, MediaSettings
    from uplink.cli import workers
    from uplink.cli.launcher import launch

    media = MediaSettings.from_env(
        args.environ,
        **({"root": args.media_dir} if args.media_dir else {}),
        **({"concurrency": args.concurrency} if args.concurrency else {}),
    )
    settings = WorkerSettings.from_env(
        "media",
        args.environ,
        COMMITS,
        **({"metrics_port": args.metrics_port} if args.metrics_port else {}),
    )
    return launch(lambda: workers.media(settings, media))


def _archive_sources(args: argparse.Namespace) -> tuple[list[str], Any]:
    """What ``archive cat`` / ``replay`` read: the paths or s3:// prefixes named, else the
    archive's own (--archive-dir / UPLINK_ARCHIVE_DIR), and the dt/hour range."""
    from consumers.archive.replay import Hours, hour
    from consumers.archive.settings import ArchiveSettings
    from uplink.variables import declaration

    configured = declaration(ArchiveSettings, "root").read(args.environ)
    targets = list(args.paths) or [args.archive_dir or configured or ""]
    if not any(targets):
        raise ConfigError("--archive-dir", "name archive files, a directory or s3://bucket/prefix")
    hours = Hours(
        hour(args.hours_from, "--from") if args.hours_from else None,
        hour(args.hours_to, "--to", last=True) if args.hours_to else None,
    )
    return targets, hours


async def _read_archive(args: argparse.Namespace, use: Callable[[Any], Awaitable[int]]) -> int:
    """Open the archive's sources (buckets started: a wrong credential or bucket is a
    ConfigError naming the setting) and hand ``use`` their files."""
    import contextlib

    from consumers.archive.replay import archive_files
    from uplink.s3.bucket import Bucket
    from uplink.s3.settings import location

    targets, hours = _archive_sources(args)
    async with contextlib.AsyncExitStack() as stack:
        sources: list[Any] = []
        for target in targets:
            where = location(target, "archive", args.environ)
            if isinstance(where, Path):
                sources.append(where)
            else:
                sources.append(await stack.enter_async_context(Bucket(where, target)))
        return await use(archive_files(sources, hours))


def _archive_cat(args: argparse.Namespace) -> int:
    import asyncio

    from consumers.archive.exceptions import ArchiveReadError
    from consumers.archive.replay import json_line, records_of

    async def cat(files: Any) -> int:
        failed = 0
        async for name, data in files:
            try:
                if isinstance(data, ArchiveReadError):
                    raise data
                for record in records_of(name, data):
                    sys.stdout.buffer.write(json_line(record) + b"\n")
            except ArchiveReadError as exc:
                failed += 1
                print(f"uplink: {exc}", file=sys.stderr)
        sys.stdout.flush()
        return 1 if failed else 0

    return asyncio.run(_read_archive(args, cat))


def _archive_replay(args: argparse.Namespace) -> int:
    import asyncio

    from consumers.archive.replay import replay
    from schemas import PushCodec
    from uplink.kafka import KafkaClients
    from uplink.registry.client import SchemaRegistry, subject
    from uplink.settings import kafka_from_env, registry_from_env

    if not args.topic:
        raise ConfigError("--topic", "replay needs the topic to produce to")
    clients = KafkaClients(kafka_from_env(args.environ))
    registry = registry_from_env(args.environ)

    async def produce(files: Any) -> int:
        codec = PushCodec()
        if registry is not None:  # framed as the ingress frames them: the topic's subject
            async with SchemaRegistry(registry) as client:
                await client.set_compatibility(subject(args.topic))
                codec.frame_with(await client.register(subject(args.topic), codec.text))
        sent, failures = await replay(files, args.topic, clients, codec)
        for failure in failures:
            print(f"uplink: {failure}", file=sys.stderr)
        print(f"replayed {sent} records to {args.topic}")
        return 1 if failures else 0

    return asyncio.run(_read_archive(args, produce))


def _router(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _router_check(args)
    if args.action is not None:
        raise ConfigError("router", f"unknown action {args.action!r} (check)")
    from consumers.router.rules import load_rules
    from consumers.router.settings import COMMITS, RouterSettings
    from uplink.cli import workers
    from uplink.cli.launcher import launch

    router = RouterSettings.from_env(args.environ, rules=args.rules)
    if not router.rules:
        raise ConfigError("--rules", "the router needs a rules file (or UPLINK_ROUTER_RULES)")
    rules = load_rules(Path(router.rules), args.environ)  # an invalid file stops start-up here
    settings = WorkerSettings.from_env(
        "router",
        args.environ,
        COMMITS,
        **({"metrics_port": args.metrics_port} if args.metrics_port else {}),
    )
    return launch(lambda: workers.router(settings, router, rules))


def _router_check(args: argparse.Namespace) -> int:
    import time

    from consumers.router.rules import VIEW, load_rules
    from schemas import PushCodec, SchemaError
    from schemas.meta import MetaWebhook, StatusCodec

    if not args.file:
        raise ConfigError("router check", "name the rules file: uplink router check FILE")
    rules = load_rules(Path(args.file), args.environ)
    print(f"{args.file}: {len(rules.rules)} rules, default {rules.default}, OK")
    codec = PushCodec()
    view = codec.viewer(VIEW)
    webhook = MetaWebhook(codec, StatusCodec())
    for sample in args.push or []:
        raw = sample.encode() if sample.lstrip().startswith("{") else Path(sample).read_bytes()
        now = int(time.time() * 1000)
        try:
            records = [codec.parse(raw, now)]
        except SchemaError as exc:
            try:  # or Meta's webhook: each of its messages is a push
                records = webhook.parse(raw, now).messages
            except SchemaError:
                records = []
            if not records:
                print(f"{sample}: not a push: {exc}", file=sys.stderr)
                return 1
        label = sample if len(sample) < 60 else sample[:57] + "..."
        for record in records:
            # Through the codec both ways: the rules see exactly what the worker reads.
            routing = rules.route(view(codec.encode(record)))
            named = label if len(records) == 1 else f"{label} {record['messageId']}"
            print(f"{named}: matched {', '.join(routing.matched) or 'no rule'}")
            for rule, action in routing.pairs:
                print(f"  {rule} -> {action}")
    return 0


def _topics(args: argparse.Namespace) -> int:
    import asyncio

    from aiokafka.errors import KafkaError

    from uplink import topology
    from uplink.settings import kafka_from_env, topics_from_env
    from uplink.topics import ensure_topics

    kafka, topics = kafka_from_env(args.environ), topics_from_env(args.environ)
    setup = topology.setup(topics, kafka.max_request_size, args.dlq)
    try:
        created = asyncio.run(ensure_topics(kafka, topics, setup.creates))
    except KafkaError as exc:
        raise KafkaUnavailable(f"cannot create topics on {kafka.bootstrap_servers}: {exc}") from exc
    for name in created:
        print(f"created {name}")
    names = setup.names
    print(f"{len(names)} topics present ({len(created)} created): {' '.join(names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uplink", description="WhatsApp Uplink Message Push → durable Kafka stream"
    )
    parser.add_argument("--log-level", help="DEBUG, INFO (default), ... (env UPLINK_LOG_LEVEL)")
    parser.add_argument(
        "--log-format", help="text (default), or json: one object per line (env UPLINK_LOG_FORMAT)"
    )
    verbs = parser.add_subparsers(dest="verb", required=True)

    broker = verbs.add_parser(
        "broker", help="run a local Apache Kafka (KRaft): one node, or a cluster with --nodes"
    )
    broker.add_argument(
        "--port",
        type=int,
        default=9092,
        help="the broker's port; with --nodes, node n's is port + 2(n-1), its controller's next",
    )
    broker.add_argument("--controller-port", type=int, default=None, help="default: port + 1")
    broker.add_argument("--data-dir", default="var/kafka", help="with --nodes: DIR/node-<n>")
    broker.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="3: a replicated cluster (a controller quorum of three, Kafka's own topics "
        "replicated to three)",
    )
    broker.add_argument(
        "--fetch-only", action="store_true", help="fetch the broker's jars and exit"
    )
    broker.set_defaults(run=_broker)

    ingress = verbs.add_parser("ingress", help="serve POST /v1/uplink (settings from env)")
    ingress.add_argument("--host", default="0.0.0.0")
    ingress.add_argument("--port", type=int, default=8080)
    ingress.add_argument("--workers", type=int, default=1, help="server processes")
    ingress.add_argument(
        "--server",
        choices=["granian", "uvicorn"],
        default="granian",
        help='granian on its RSGI interface (the faster: bench/RESULTS.md, "Ingress load"), '
        "or uvicorn (ASGI)",
    )
    ingress.add_argument("--access-log", action="store_true")
    ingress.set_defaults(run=_ingress)

    archive = verbs.add_parser(
        "archive",
        help="archive worker (group uplink-archive); `archive cat|replay PATH...` read files back",
    )
    archive.add_argument("action", nargs="?", choices=["cat", "replay"], default=None)
    archive.add_argument(
        "paths",
        nargs="*",
        help="cat and replay: archive files, directories or s3://bucket/prefix "
        "(default: --archive-dir)",
    )
    archive.add_argument(
        "--from", dest="hours_from", help="cat and replay: from this event hour (YYYY-MM-DDTHH)"
    )
    archive.add_argument(
        "--to", dest="hours_to", help="cat and replay: up to this event hour, included"
    )
    archive.add_argument(
        "--archive-dir",
        help="where the worker writes its files: a directory or s3://bucket/prefix "
        "(or UPLINK_ARCHIVE_DIR); cat and replay read files under it",
    )
    archive.add_argument(
        "--work-dir",
        help="local directory for files on their way to a bucket (or UPLINK_ARCHIVE_WORK_DIR)",
    )
    archive.add_argument("--max-records", type=int, help="records per file")
    archive.add_argument(
        "--flush-interval",
        type=float,
        default=None,
        help="seconds between commits of a quiet stream (default 60, or UPLINK_COMMIT_INTERVAL)",
    )
    archive.add_argument(
        "--codec", choices=["deflate", "zstandard", "null"], help="the files' compression"
    )
    archive.add_argument(
        "--verify",
        action="store_true",
        help="decode every record before archiving it, a corrupt one goes to the DLQ (slower)",
    )
    archive.add_argument("--metrics-port", type=int, default=None)
    archive.add_argument("--topic", help="replay: the topic to produce to")
    archive.set_defaults(run=_archive)

    router = verbs.add_parser(
        "router",
        help="router worker (group uplink-router); `router check FILE` validates a rules file",
    )
    router.add_argument("action", nargs="?", choices=["check"], default=None)
    router.add_argument("file", nargs="?", help="check: the rules file")
    router.add_argument("--rules", help="the rules file (TOML)")
    router.add_argument(
        "--push",
        action="append",
        help="check: a sample push (a JSON file, or inline JSON) to show which rules it hits",
    )
    router.add_argument("--metrics-port", type=int, default=None)
    router.set_defaults(run=_router)

    topics = verbs.add_parser(
        "topics", help="create the missing topics (settings from env) and exit; safe to re-run"
    )
    topics.add_argument(
        "--dlq",
        nargs="*",
        default=["archive", "media", "router"],
        metavar="WORKER",
        help="workers whose DLQs to create too (default: archive media router)",
    )
    topics.set_defaults(run=_topics)

    dev = verbs.add_parser(
        "dev",
        help="the whole pipeline on this machine: Kafka, ingress, archive, media, router",
        description="Starts the local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS is set), "
        "creates the topics, and runs the ingress and the archive, media and router workers, "
        "with their data under --var-dir. Ctrl-C or SIGTERM stops everything, the broker last.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="the ingress's address")
    dev.add_argument("--port", type=int, default=8080, help="the ingress's port")
    dev.add_argument("--kafka-port", type=int, default=9092, help="the local broker's port")
    dev.add_argument("--var-dir", default="var", help="archive, media and broker data")
    dev.add_argument(
        "--rules", help="the router's rules (TOML; default: the example rules uplink ships)"
    )
    dev.add_argument(
        "--metrics-port",
        type=int,
        default=9101,
        help="archive's metrics port; media and router take the next two (0: free ports)",
    )
    dev.add_argument(
        "--console-port", type=int, default=8090, help="the web console's port (0: a free one)"
    )

    media = verbs.add_parser(
        "media", help="media worker (group uplink-media): fetch, verify and keep media"
    )
    media.add_argument("--media-dir", help="where objects are kept (or UPLINK_MEDIA_DIR)")
    media.add_argument(
        "--concurrency", type=int, default=None, help="downloads in flight (default 32)"
    )
    media.add_argument("--metrics-port", type=int, default=None)
    media.set_defaults(run=_media)

    dev.set_defaults(run=_dev)

    console = verbs.add_parser(
        "console",
        help="the web console: overview, dead letters, quarantine, traces, conversations",
        description="Serves the console on --host:--port. On any address but loopback "
        "UPLINK_CONSOLE_TOKEN is required. Re-drives and reposts are off unless --allow-actions.",
    )
    console.add_argument("--host", default="127.0.0.1")
    console.add_argument("--port", type=int, default=8090)
    console.add_argument(
        "--allow-actions", action="store_true", help="allow re-drives and reposts (POSTs)"
    )
    console.add_argument(
        "--group", action="append", help="WORKER=GROUP, repeated (default uplink-<worker>)"
    )
    console.add_argument(
        "--media-dir", help="the media store to show media from (or UPLINK_MEDIA_DIR)"
    )
    console.set_defaults(run=_console)

    from uplink.cli.operate import add_verbs

    add_verbs(verbs)  # dlq, quarantine, trace, conversation
    return parser


# Exit codes (docs/commands.md): 0 done or stopped by a signal, 1 failed, 2 a usage error (the
# arguments' parser), 75 (EX_TEMPFAIL) failed for now: a restart may succeed (Kafka unreachable,
# a transaction that did not commit, a handler's background work that failed), 78 (EX_CONFIG) a
# configuration refused: a bad setting, or Kafka refusing our credentials or an ACL.
EXIT_FAILED = 1
EXIT_RETRIABLE = 75
EXIT_CONFIG = 78


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """The ``uplink`` command; the environment is read here, once, and handed down."""
    from uplink.refusals import refusal

    args = build_parser().parse_args(argv)
    args.environ = dict(os.environ if environ is None else environ)
    try:
        logging_settings = LogSettings.from_env(
            args.environ, level=args.log_level, format=args.log_format
        )
        args.log_level, args.log_format = logging_settings.level, logging_settings.format
        args.log_config = logs.config(logging_settings.level, logging_settings.format)
        if not logging.getLogger().handlers:  # as basicConfig: an embedding host keeps its own
            logging.config.dictConfig(args.log_config)
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"uplink: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (UplinkError, KafkaError) as exc:
        refused = refusal(exc)
        if refused is not None:
            print(f"uplink: configuration refused: {_one_line(refused)}", file=sys.stderr)
            return EXIT_CONFIG
        print(f"uplink: {_one_line(exc)}", file=sys.stderr)
        return EXIT_RETRIABLE if exc.retriable else EXIT_FAILED
    return code


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, UplinkError) else f"Kafka: {text} ({type(error).__name__})"


if __name__ == "__main__":
    sys.exit(main())
