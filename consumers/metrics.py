"""Prometheus metrics of one worker, served on a small HTTP port of its own when configured."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from uplink.metrics import LatencyHistogram


class WorkerMetrics:
    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.processed: Counter[TopicPartition] = Counter()
        self.duplicates: Counter[TopicPartition] = Counter()
        self.dead_lettered: Counter[TopicPartition] = Counter()
        self.retries: Counter[TopicPartition] = Counter()
        self.lag: dict[TopicPartition, int] = {}
        self.commit_seconds = LatencyHistogram()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        self._server: WSGIServer | None = None

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

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


class RouterMetrics:
    """The router's own figures, registered beside the worker's (one /metrics)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.matches: Counter[str] = Counter()  # rule (or "default") → pushes matched
        self.outputs: Counter[str] = Counter()  # destination ("topic:x", "http:y", "drop")
        self.retries: Counter[str] = Counter()  # endpoint → deliveries parked for a retry
        self.dead_lettered: Counter[str] = Counter()  # endpoint → deliveries given up
        self.delivered: Counter[str] = Counter()  # endpoint → successful POSTs
        self.latency: dict[str, LatencyHistogram] = {}  # endpoint → POST latency
        registry.register(self)

    def observe_delivery(self, endpoint: str, seconds: float) -> None:
        histogram = self.latency.get(endpoint)
        if histogram is None:
            histogram = self.latency[endpoint] = LatencyHistogram()
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        for name, documentation, label, counts in (
            ("uplink_router_matches", "Pushes a rule matched", "rule", self.matches),
            ("uplink_router_outputs", "Outputs per destination", "destination", self.outputs),
            ("uplink_router_delivered", "HTTP deliveries accepted", "endpoint", self.delivered),
            (
                "uplink_router_retries",
                "HTTP deliveries parked for a retry",
                "endpoint",
                self.retries,
            ),
            (
                "uplink_router_dead_lettered",
                "HTTP deliveries given up",
                "endpoint",
                self.dead_lettered,
            ),
        ):
            family = CounterMetricFamily(name, documentation, labels=[label])
            for key, count in sorted(counts.items()):
                family.add_metric([key], count)
            yield family
        latency = HistogramMetricFamily(
            "uplink_router_delivery_seconds", "HTTP delivery latency", labels=["endpoint"]
        )
        for endpoint, histogram in sorted(self.latency.items()):
            latency.add_metric([endpoint], histogram.cumulative(), histogram.sum)
        yield latency
