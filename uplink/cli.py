"""The ``uplink`` command: one verb per process kind. Settings are read here, at the edge."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from uplink.exceptions import ConfigError, UplinkError

log = logging.getLogger("uplink")


def _broker(args: argparse.Namespace) -> int:
    from uplink.broker import BrokerSettings, LocalBroker, fetch_jars

    settings = BrokerSettings(
        port=args.port, controller_port=args.controller_port, data_dir=Path(args.data_dir)
    )
    if args.fetch_only:
        print(fetch_jars(settings.cache_dir, settings.kafka_version))
        return 0
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


def _serve_ingress(host: str, port: int, workers: int, access_log: bool) -> None:
    import uvicorn

    from uplink.settings import IngressSettings

    settings = IngressSettings.from_env(os.environ)  # validate before any worker starts
    uvicorn.run(
        "ingress.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=access_log,
        # In-flight pushes get their answer before the producer is flushed and closed.
        timeout_graceful_shutdown=int(settings.produce_timeout) + 5,
    )


def _ingress(args: argparse.Namespace) -> int:
    _serve_ingress(args.host, args.port, args.workers, args.access_log)
    return 0


def _dev(args: argparse.Namespace) -> int:
    from uplink.broker import kafka_broker

    var = Path(args.var_dir)
    with kafka_broker(os.environ, data_dir=var / "kafka", port=args.kafka_port) as bootstrap:
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
        print(
            f"\nuplink dev\n  Kafka    {bootstrap}\n"
            f"  ingress  http://{args.host}:{args.port}/v1/uplink"
            f"  (/healthz /readyz /metrics)\n"
            f"  data     {var.resolve()}\n"
            f"  try:     curl -s -XPOST -H 'content-type: application/json' "
            f"--data-binary @tests/examples/text.json http://{args.host}:{args.port}/v1/uplink\n",
            flush=True,
        )
        _serve_ingress(args.host, args.port, 1, args.access_log)
    return 0


def _archive(args: argparse.Namespace) -> int:
    if args.action == "cat":
        return _archive_cat(args)
    if args.action == "replay":
        return _archive_replay(args)
    if not args.archive_dir:
        raise ConfigError("--archive-dir", "the archive worker needs a directory to write to")
    import asyncio

    from consumers.archive import ArchiveFiles, ArchiveSettings
    from consumers.runtime import Worker
    from schemas import PushCodec
    from uplink.settings import WorkerSettings

    archive = ArchiveSettings(
        root=Path(args.archive_dir), max_records=args.max_records, codec=args.codec
    )
    settings = WorkerSettings.from_env(
        "archive",
        os.environ,
        # A flush renames every open file: by count and interval, files rotate with commits.
        commit_every=args.max_records,
        commit_interval=args.flush_interval,
        **({"metrics_port": args.metrics_port} if args.metrics_port else {}),
    )

    async def run() -> None:
        worker = Worker(settings, ArchiveFiles(archive), PushCodec())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.request_stop)
        async with worker:
            await worker.run()

    asyncio.run(run())
    return 0


def _archive_cat(args: argparse.Namespace) -> int:
    from consumers.replay import ArchiveReadError, archived_records, json_line

    failed = 0
    for path in map(Path, args.paths):
        try:
            for record in archived_records(path):
                sys.stdout.buffer.write(json_line(record) + b"\n")
        except ArchiveReadError as exc:
            failed += 1
            print(f"uplink: {exc}", file=sys.stderr)
    sys.stdout.flush()
    return 1 if failed else 0


def _archive_replay(args: argparse.Namespace) -> int:
    import asyncio

    from consumers.replay import replay
    from schemas import PushCodec
    from uplink.settings import kafka_from_env

    if not args.topic:
        raise ConfigError("--topic", "replay needs the topic to produce to")
    sent, failures = asyncio.run(
        replay(map(Path, args.paths), args.topic, kafka_from_env(os.environ), PushCodec())
    )
    for failure in failures:
        print(f"uplink: {failure}", file=sys.stderr)
    print(f"replayed {sent} records to {args.topic}")
    return 1 if failures else 0


def _router(args: argparse.Namespace) -> int:
    if args.action == "check":
        return _router_check(args)
    if args.action is not None:
        raise ConfigError("router", f"unknown action {args.action!r} (check)")
    if not args.rules:
        raise ConfigError("--rules", "the router needs a rules file")
    import asyncio

    from consumers.deadletters import DeadLetters
    from consumers.delivery import Deliverer, RetryLoop
    from consumers.metrics import RouterMetrics, WorkerMetrics
    from consumers.router import Router, router_topics
    from consumers.rules import load_rules
    from consumers.runtime import Worker
    from schemas import PushCodec
    from uplink.settings import RouterSettings, WorkerSettings
    from uplink.topics import ensure_topics

    rules = load_rules(Path(args.rules), os.environ)  # an invalid file stops start-up here
    settings = WorkerSettings.from_env(
        "router",
        os.environ,
        # Commits end the router's transactions: a short interval keeps routed records
        # visible to read_committed readers soon after they arrive.
        **({} if os.environ.get("UPLINK_COMMIT_INTERVAL") else {"commit_interval": 0.5}),
        **({"metrics_port": args.metrics_port} if args.metrics_port else {}),
    )
    router_settings = RouterSettings.from_env(os.environ)

    async def run() -> None:
        codec = PushCodec()
        outputs = router_topics(rules, settings, router_settings)
        await ensure_topics(settings.kafka, settings.topics, extra=outputs)
        worker_metrics = WorkerMetrics(settings.name)
        metrics = RouterMetrics(worker_metrics.registry)
        dead_letters = DeadLetters(settings, worker_metrics)  # the worker starts and stops it
        deliverer = Deliverer(rules.endpoints, metrics)
        router = Router(rules, settings, router_settings, deliverer, dead_letters, metrics)
        worker = Worker(settings, router, codec, metrics=worker_metrics, dead_letters=dead_letters)
        retries = RetryLoop(settings, router_settings, deliverer, dead_letters, metrics, codec)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            worker.request_stop()
            retries.request_stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop)
        async with router, worker, retries:
            tasks = [asyncio.create_task(worker.run()), asyncio.create_task(retries.run())]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            stop()  # one ended (a stop request, or an error): end the other too
            await asyncio.gather(*tasks)

    asyncio.run(run())
    return 0


def _router_check(args: argparse.Namespace) -> int:
    import time

    from consumers.rules import load_rules
    from schemas import PushCodec, SchemaError

    if not args.file:
        raise ConfigError("router check", "name the rules file: uplink router check FILE")
    rules = load_rules(Path(args.file), os.environ)
    print(f"{args.file}: {len(rules.rules)} rules, default {rules.default}, OK")
    codec = PushCodec()
    for sample in args.push or []:
        raw = sample.encode() if sample.lstrip().startswith("{") else Path(sample).read_bytes()
        try:
            # Through the codec both ways: the rules see exactly what the worker decodes.
            push = codec.decode(codec.encode(codec.parse(raw, int(time.time() * 1000))))
        except SchemaError as exc:
            print(f"{sample}: not a push: {exc}", file=sys.stderr)
            return 1
        routing = rules.route(push)
        label = sample if len(sample) < 60 else sample[:57] + "..."
        print(f"{label}: matched {', '.join(routing.matched) or 'no rule'}")
        for rule, action in routing.pairs:
            print(f"  {rule} -> {action}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uplink", description="WhatsApp Uplink Message Push → durable Kafka stream"
    )
    parser.add_argument("--log-level", default=os.environ.get("UPLINK_LOG_LEVEL", "INFO"))
    verbs = parser.add_subparsers(dest="verb", required=True)

    broker = verbs.add_parser("broker", help="run a local single-node Apache Kafka (KRaft)")
    broker.add_argument("--port", type=int, default=9092)
    broker.add_argument("--controller-port", type=int, default=None, help="default: port + 1")
    broker.add_argument("--data-dir", default="var/kafka")
    broker.add_argument(
        "--fetch-only", action="store_true", help="fetch the broker's jars and exit"
    )
    broker.set_defaults(run=_broker)

    ingress = verbs.add_parser("ingress", help="serve POST /v1/uplink (settings from env)")
    ingress.add_argument("--host", default="0.0.0.0")
    ingress.add_argument("--port", type=int, default=8080)
    ingress.add_argument("--workers", type=int, default=1)
    ingress.add_argument("--access-log", action="store_true")
    ingress.set_defaults(run=_ingress)

    archive = verbs.add_parser(
        "archive",
        help="archive worker (group uplink-archive); `archive cat|replay PATH...` read files back",
    )
    archive.add_argument("action", nargs="?", choices=["cat", "replay"], default=None)
    archive.add_argument("paths", nargs="*", help="archive files, for cat and replay")
    archive.add_argument("--archive-dir", help="where the worker writes its files")
    archive.add_argument("--max-records", type=int, default=10_000, help="records per file")
    archive.add_argument("--flush-interval", type=float, default=60.0, help="seconds")
    archive.add_argument("--codec", choices=["deflate", "zstandard", "null"], default="deflate")
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

    dev = verbs.add_parser("dev", help="everything on this machine: local Kafka + ingress")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--kafka-port", type=int, default=9092)
    dev.add_argument("--var-dir", default="var")
    dev.add_argument("--access-log", action="store_true")
    dev.set_defaults(run=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        print(f"uplink: configuration error: {exc}", file=sys.stderr)
        return 2
    except UplinkError as exc:
        print(f"uplink: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
