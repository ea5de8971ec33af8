"""Prometheus metrics of one worker, registered in its process's registry (which the launcher
serves on the worker's metrics port)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from uplink.logs import suppressed_family
from uplink.metrics import LatencyHistogram


class WorkerMetrics:
    def __init__(self, worker: str, registry: CollectorRegistry | None = None) -> None:
        self.worker = worker
        self.processed: Counter[TopicPartition] = Counter()
        self.duplicates: Counter[TopicPartition] = Counter()
        self.dead_lettered: Counter[TopicPartition] = Counter()
        self.retries: Counter[TopicPartition] = Counter()
        self.lag: dict[TopicPartition, int] = {}
        self.commit_seconds = LatencyHistogram()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for name, documentation, counts in (
            ("uplink_worker_processed", "Records handled", self.processed),
            (
                "uplink_worker_duplicates",
                "Duplicates skipped (same messageId in the window)",
                self.duplicates,
            ),
            ("uplink_worker_dead_lettered", "Records sent to the DLQ", self.dead_lettered),
            ("uplink_worker_retries", "Transient failures retried", self.retries),
        ):
            family = CounterMetricFamily(
                name, documentation, labels=["worker", "topic", "partition"]
            )
            for tp, count in sorted(counts.items()):
                family.add_metric([self.worker, tp.topic, str(tp.partition)], count)
            yield family
        lag = GaugeMetricFamily(
            "uplink_worker_lag",
            "Records behind the partition's end",
            labels=["worker", "topic", "partition"],
        )
        for tp, behind in sorted(self.lag.items()):
            lag.add_metric([self.worker, tp.topic, str(tp.partition)], behind)
        yield lag
        yield self.commit_seconds.family(
            "uplink_worker_commit_seconds", "Offset commit latency", {"worker": self.worker}
        )
        yield suppressed_family()  # the Kafka client's log repeats, rate-limited

    def render(self) -> bytes:
        return generate_latest(self.registry)
