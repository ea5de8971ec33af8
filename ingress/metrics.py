"""Prometheus metrics of one ingress process, in a registry of its own (no module globals)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "IngressMetrics"]

# Produce latency: milliseconds (linger + broker round trip), with a tail up to the timeout.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngressMetrics:
    def __init__(self, in_flight: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.pushes = Counter(
            "uplink_ingress_pushes",
            "Pushes answered, by HTTP status code",
            ["code"],
            registry=self.registry,
        )
        self.produce_seconds = Histogram(
            "uplink_ingress_produce_seconds",
            "Time from produce to the broker's acknowledgement",
            ["topic"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "uplink_ingress_in_flight",
            "Records awaiting the broker's acknowledgement",
            registry=self.registry,
        )
        self.in_flight.set_function(in_flight)
        self.quarantined = Counter(
            "uplink_ingress_quarantined",
            "Bodies that were not pushes, kept in the quarantine topic",
            ["reason"],
            registry=self.registry,
        )
        self.shed = Counter(
            "uplink_ingress_shed",
            "Pushes answered 503 because they could not be made durable",
            ["cause"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
