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


def _media(args: argparse.Namespace) -> int:
    import asyncio

    from consumers.deadletters import DeadLetters
    from consumers.fetch import Fetcher
    from consumers.guard import AddressGuard
    from consumers.media import MediaEvents, MediaHandler
    from consumers.metrics import WorkerMetrics
    from consumers.runtime import Worker
    from consumers.storage import FileStore
    from schemas import PushCodec
    from uplink.settings import MediaSettings, WorkerSettings

    media = MediaSettings.from_env(
        os.environ,
        **({"root": Path(args.media_dir)} if args.media_dir else {}),
        **({"concurrency": args.concurrency} if args.concurrency else {}),
    )
    settings = WorkerSettings.from_env(
        "media",
        os.environ,
        **({"metrics_port": args.metrics_port} if args.metrics_port else {}),
    )

    async def run() -> None:
        store = FileStore(media.root)
        fetcher = Fetcher(media, AddressGuard(media.allow_hosts))
        events = MediaEvents(settings.kafka, settings.topics)
        metrics = WorkerMetrics(settings.name)
        dead_letters = DeadLetters(settings, metrics)  # shared: downloads end in the background
        handler = MediaHandler(media, fetcher, store, events, dead_letters)
        worker = Worker(settings, handler, PushCodec(), metrics=metrics, dead_letters=dead_letters)
        metrics.registry.register(handler.metrics)  # served with the runtime's
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.request_stop)
        async with store, fetcher, events, worker:
            try:
                await worker.run()
            finally:
                # In-flight downloads finish (or are cancelled) before the final commit.
                await handler.drain(media.drain_timeout)

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

    media = verbs.add_parser(
        "media", help="media worker (group uplink-media): fetch, verify and keep media"
    )
    media.add_argument("--media-dir", help="where objects are kept (or UPLINK_MEDIA_DIR)")
    media.add_argument(
        "--concurrency", type=int, default=None, help="downloads in flight (default 32)"
    )
    media.add_argument("--metrics-port", type=int, default=None)
    media.set_defaults(run=_media)

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
