"""The wiring: each worker process built from its settings, every collaborator made here and
passed in (Kafka and HTTP clients through their factories). ``uplink/cli/launcher.py`` runs the
result; tests and benchmarks build the same assemblies."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from consumers.archive.files import ArchiveFiles
from consumers.archive.settings import ArchiveSettings
from consumers.archive.stores import ArchiveBucket, ArchiveStore, DirectoryStore
from consumers.media.fetch import Fetcher
from consumers.media.graph import GraphMedia
from consumers.media.guard import AddressGuard
from consumers.media.handler import MediaHandler
from consumers.media.settings import MediaSettings
from consumers.media.storage import FileStore, MediaBucket
from consumers.router.delivery import Deliverer
from consumers.router.handler import Router
from consumers.router.metrics import RouterMetrics
from consumers.router.redelivery import Redeliveries, retry_group
from consumers.router.rules import Rules
from consumers.router.settings import RouterSettings
from consumers.router.settlements import Settlements
from consumers.runtime import DeadLetters, Handler, Worker, WorkerMetrics
from schemas import MediaCodec, PushCodec
from uplink import topology
from uplink.cli.launcher import Assembly
from uplink.http import HttpClients
from uplink.kafka import KafkaClients, Producer
from uplink.reachability import Reachability
from uplink.refusals import Diagnosis
from uplink.registry.client import (
    START_TIMEOUT,
    Registration,
    SchemaRegistry,
    SubjectSchemas,
    subject,
)
from uplink.resources import Resource
from uplink.s3.bucket import Bucket
from uplink.settings import WorkerSettings
from uplink.topology import Topology


@dataclasses.dataclass(frozen=True)
class _Process:
    """What every worker process has: its Kafka clients, one producer of side records (dead
    letters, media events, parked deliveries), its metrics and its DLQ."""

    settings: WorkerSettings
    clients: KafkaClients
    producer: Producer
    metrics: WorkerMetrics
    dead_letters: DeadLetters
    registry: SchemaRegistry | None  # with UPLINK_SCHEMA_REGISTRY_URL: writer schemas by id

    @classmethod
    def of(cls, settings: WorkerSettings) -> _Process:
        clients = KafkaClients(settings.kafka)
        producer = Producer(clients)
        metrics = WorkerMetrics(settings.name)
        registry = SchemaRegistry(settings.registry) if settings.registry is not None else None
        return cls(
            settings, clients, producer, metrics, DeadLetters(settings, producer, metrics), registry
        )

    def pending(self) -> str:
        """What waits for the cluster, for the outage's reminders."""
        behind = sum(self.metrics.lag.values())
        return f"{behind} records behind the partitions' ends as last measured"

    def codec(self) -> PushCodec:
        """The codec of the pushes it reads: records of any known writer schema, in either
        framing; with a registry, the writer schemas of ids it meets are fetched from there."""
        if self.registry is None:
            return PushCodec()
        messages = subject(self.settings.topics.messages)
        return PushCodec(lookup=SubjectSchemas(self.registry, messages))

    def worker(
        self,
        handler: Handler,
        codec: PushCodec,
        subscribe: Sequence[str],
        settings: WorkerSettings | None = None,
        dedupe: bool = True,
    ) -> Worker:
        return Worker(
            settings or self.settings,
            handler,
            codec,
            clients=self.clients,
            metrics=self.metrics,
            dead_letters=self.dead_letters,
            subscribe=subscribe,
            dedupe=dedupe,
        )

    def redrive(self, handler: Handler, codec: PushCodec) -> tuple[Worker, Topology]:
        """The worker's reader of its re-drive topic (``uplink dlq redrive``): its own group,
        ``<group>-redrive``, and no dedupe, as the command copies each dead letter once and a
        record re-driven again after a second fix must not count as a duplicate."""
        settings = dataclasses.replace(self.settings, group_id=redrive_group(self.settings.group))
        flow = topology.redrive(self.settings)
        return self.worker(handler, codec, flow.reads, settings=settings, dedupe=False), flow

    def assembly(
        self, workers: list[Worker], resources: list[Resource], topology: Topology
    ) -> Assembly:
        """The process: its registry client and producer start first and stop last; the
        watch on the cluster (its loss logged once, reminded, its return) right after the
        producer, whose connection it probes."""
        settings = self.settings
        first: list[Resource] = [self.registry] if self.registry is not None else []
        watch = Reachability(
            _Probe(self.producer, Diagnosis(settings.kafka), workers),
            after=settings.kafka.unreachable_after,
            remind_every=settings.kafka.outage_reminder,
            summary=self.pending,
        )
        return Assembly(
            settings.kafka,
            settings.topics,
            workers,
            resources=[*first, self.producer, watch, *resources],
            topology=topology,
            registry=self.metrics.registry,
            metrics_port=settings.metrics_port,
        )


class _Probe:
    """The process's reachability probe: whether a broker answers its producer; while none
    does, whether it is Kafka refusing our credentials (rotated or revoked after start-up),
    which stops every worker with the refusal (exit 78) rather than waiting as for an outage."""

    def __init__(self, producer: Producer, diagnosis: Diagnosis, workers: list[Worker]) -> None:
        self._producer = producer
        self._diagnosis = diagnosis
        self._workers = workers

    async def __call__(self, timeout: float) -> bool:
        if await self._producer.check(timeout):
            return True
        refused = await self._diagnosis()
        if refused is not None:
            for worker in self._workers:
                worker.fail(refused)
        return False


def archive_store(archive: ArchiveSettings) -> ArchiveStore:
    """Where the archive publishes its files: its directory, or its bucket."""
    if isinstance(archive.root, Path):
        return DirectoryStore(archive.root)
    return ArchiveBucket(Bucket(archive.root, "UPLINK_ARCHIVE_DIR"), archive.work_dir)


def redrive_group(group: str) -> str:
    """The group that reads a worker's re-drive topic: ``uplink-<worker>-redrive``."""
    return f"{group}-redrive"


def archive(settings: WorkerSettings, archive: ArchiveSettings) -> Assembly:
    process = _Process.of(settings)
    codec = process.codec()
    store = archive_store(archive)
    files, redriven = ArchiveFiles(archive, store, codec), ArchiveFiles(archive, store, codec)
    flow = topology.archive(settings)
    again, redrives = process.redrive(redriven, codec)
    return process.assembly(
        [process.worker(files, codec, flow.reads), again], [files, redriven], flow | redrives
    )


def media(
    settings: WorkerSettings, media: MediaSettings, http: HttpClients | None = None
) -> Assembly:
    process = _Process.of(settings)
    store: FileStore | MediaBucket = (
        FileStore(media.root)
        if isinstance(media.root, Path)
        else MediaBucket(Bucket(media.root, "UPLINK_MEDIA_DIR"), media.work_dir)
    )
    guard = AddressGuard(media.allow_hosts)
    fetcher = Fetcher(media, guard, clients=http)
    token = media.meta.access_token
    graph = GraphMedia(media.meta, token, media, fetcher, guard, clients=http) if token else None
    events = MediaCodec()
    registered: list[Resource] = []
    if process.registry is not None:
        # Its events are framed with their schema's id: registered before the worker starts.
        registered = [
            Registration(
                process.registry,
                subject(settings.topics.media),
                events.text,
                on_registered=events.frame_with,
                wait=START_TIMEOUT,  # then exit 75: its supervisor restarts it
            )
        ]
    handler, redriven = (
        MediaHandler(
            media,
            fetcher,
            store,
            process.producer,
            settings.topics.media,
            process.dead_letters,
            codec=events,
            graph=graph,
        )
        for _ in range(2)
    )
    process.metrics.registry.register(handler.metrics)  # served with the runtime's
    resources: list[Resource] = [*registered, store, fetcher, *([graph] if graph else [])]
    codec = process.codec()
    flow = topology.media(settings)
    again, redrives = process.redrive(redriven, codec)
    return process.assembly(
        [process.worker(handler, codec, flow.reads), again],
        [*resources, handler, redriven],
        flow | redrives,
    )


def router(
    settings: WorkerSettings,
    router: RouterSettings,
    rules: Rules,
    http: HttpClients | None = None,
) -> Assembly:
    """The router and, in the same process, its re-deliveries: a second worker on the delay
    topics (its own group, no dedupe), sharing the router's HTTP clients, producer, DLQ and
    metrics (its figures are apart: their partitions are the delay topics'); and a third, a
    router on its re-drive topic."""
    process = _Process.of(settings)
    codec = process.codec()
    metrics = RouterMetrics(process.metrics.registry)
    deliverer = Deliverer(rules.endpoints, metrics, clients=http)

    def routing(worker: WorkerSettings, redrive: bool) -> Router:
        return Router(
            rules,
            worker,
            router,
            deliverer,
            process.dead_letters,
            metrics,
            codec,
            process.clients,
            redrive=redrive,
            settlements=process.producer,
        )

    handler = routing(settings, redrive=False)
    settlements = Settlements(process.clients)
    redeliveries = Redeliveries(
        router,
        deliverer,
        process.producer,
        process.dead_letters,
        metrics,
        settlements=settlements,
    )
    retrying = dataclasses.replace(settings, group_id=retry_group(settings.group))
    routes = topology.router(settings, rules.topics, router.delay_topics)
    retries = topology.redeliveries(settings, router.delay_topics)
    redriven = routing(
        dataclasses.replace(settings, group_id=redrive_group(settings.group)), redrive=True
    )
    again, redrives = process.redrive(redriven, codec)
    return process.assembly(
        [
            process.worker(handler, codec, routes.reads),
            process.worker(redeliveries, codec, retries.reads, settings=retrying, dedupe=False),
            again,
        ],
        [deliverer, handler, settlements, redeliveries, redriven],
        routes | retries | redrives,
    )
