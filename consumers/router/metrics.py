"""The router's own metrics, beside the runtime's: registered in the worker's registry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

from uplink.metrics import LatencyHistogram


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
