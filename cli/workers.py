"""The wiring: each worker process built from its settings, every collaborator made here and
passed in (Kafka and HTTP clients through their factories). ``cli/launcher.py`` runs the
result; tests and benchmarks build the same assemblies."""

from __future__ import annotations

import dataclasses

from cli.launcher import Assembly
from consumers.archive.files import ArchiveFiles
from consumers.archive.settings import ArchiveSettings
from consumers.media.fetch import Fetcher
from consumers.media.guard import AddressGuard
from consumers.media.handler import MediaHandler
from consumers.media.settings import MediaSettings
from consumers.media.storage import FileStore
from consumers.router.delivery import Deliverer
from consumers.router.handler import Router, router_topics
from consumers.router.metrics import RouterMetrics
from consumers.router.redelivery import Redeliveries, retry_group
from consumers.router.rules import Rules
from consumers.router.settings import RouterSettings
from consumers.runtime import DeadLetters, Worker, WorkerMetrics
from schemas import PushCodec
from uplink.http import HttpClients
from uplink.kafka import KafkaClients, Producer
from uplink.settings import WorkerSettings
from uplink.topics import TopicSpec, dlq_spec


def _base(settings: WorkerSettings) -> tuple[KafkaClients, Producer, WorkerMetrics, DeadLetters]:
    """What every worker process has: its clients, one producer of side records (dead letters,
    media events, parked deliveries), its metrics and its DLQ."""
    clients = KafkaClients(settings.kafka)
    producer = Producer(clients)
    metrics = WorkerMetrics(settings.name)
    return clients, producer, metrics, DeadLetters(settings, producer, metrics)


def _dlq(settings: WorkerSettings) -> list[TopicSpec]:
    return [dlq_spec(settings.topics, settings.name, settings.kafka.max_request_size)]


def archive(settings: WorkerSettings, archive: ArchiveSettings) -> Assembly:
    clients, producer, metrics, dead_letters = _base(settings)
    files = ArchiveFiles(archive)
    worker = Worker(
        settings, files, PushCodec(), clients=clients, metrics=metrics, dead_letters=dead_letters
    )
    return Assembly(
        "archive",
        settings.kafka,
        settings.topics,
        [worker],
        resources=[producer, files],
        writes=_dlq(settings),
        registry=metrics.registry,
        metrics_port=settings.metrics_port,
    )


def media(
    settings: WorkerSettings, media: MediaSettings, http: HttpClients | None = None
) -> Assembly:
    clients, producer, metrics, dead_letters = _base(settings)
    store = FileStore(media.root)
    fetcher = Fetcher(media, AddressGuard(media.allow_hosts), clients=http)
    handler = MediaHandler(media, fetcher, store, producer, settings.topics.media, dead_letters)
    metrics.registry.register(handler.metrics)  # served with the runtime's
    worker = Worker(
        settings, handler, PushCodec(), clients=clients, metrics=metrics, dead_letters=dead_letters
    )
    return Assembly(
        "media",
        settings.kafka,
        settings.topics,
        [worker],
        resources=[producer, store, fetcher, handler],
        writes=_dlq(settings),
        registry=metrics.registry,
        metrics_port=settings.metrics_port,
    )


def router(
    settings: WorkerSettings,
    router: RouterSettings,
    rules: Rules,
    http: HttpClients | None = None,
) -> Assembly:
    """The router and, in the same process, its re-deliveries: a second worker on the delay
    topics, sharing the router's HTTP clients, producer, DLQ and metrics."""
    clients, producer, metrics, dead_letters = _base(settings)
    codec = PushCodec()
    router_metrics = RouterMetrics(metrics.registry)
    deliverer = Deliverer(rules.endpoints, router_metrics, clients=http)
    handler = Router(
        rules, settings, router, deliverer, dead_letters, router_metrics, codec, clients
    )
    redeliveries = Redeliveries(router, deliverer, producer, dead_letters, router_metrics)
    retry_settings = dataclasses.replace(settings, group_id=retry_group(settings.group))
    workers = [
        Worker(
            settings, handler, codec, clients=clients, metrics=metrics, dead_letters=dead_letters
        ),
        Worker(
            retry_settings,
            redeliveries,
            codec,
            clients=clients,
            metrics=metrics,  # their partitions are the delay topics': apart in every figure
            dead_letters=dead_letters,
            subscribe=router.delay_topics,
            dedupe=False,
        ),
    ]
    return Assembly(
        "router",
        settings.kafka,
        settings.topics,
        workers,
        resources=[producer, deliverer, handler, redeliveries],
        writes=_dlq(settings) + router_topics(rules, settings, router),
        registry=metrics.registry,
        metrics_port=settings.metrics_port,
    )
