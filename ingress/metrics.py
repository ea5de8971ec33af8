"""Prometheus metrics of one ingress process, in a registry of its own (no module globals).

Counted in plain ints and rendered at scrape time (see uplink/metrics.py): prometheus-client's
locked updates are a cost on every push (bench/RESULTS.md, "Ingress load").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from uplink.logs import suppressed_family
from uplink.metrics import LatencyHistogram

__all__ = ["CONTENT_TYPE_LATEST", "IngressMetrics"]


class IngressMetrics:
    def __init__(
        self,
        produce_topic: str,
        in_flight: Callable[[], float],
        *,
        buffered: Callable[[], float] = lambda: 0,
        withdrawn: Callable[[], float] = lambda: 0,
        renewals: Callable[[], float] = lambda: 0,
        reachable: Callable[[], bool] = lambda: True,
        refusals: Callable[[], Counter[str]] = Counter,
    ) -> None:
        self.pushes: Counter[int] = Counter()  # by HTTP status code
        self.quarantined: Counter[str] = Counter()  # by reason: not_a_push, too_large
        self.shed: Counter[str] = Counter()  # by cause: kafka, unreachable, overloaded, schema
        self.meta_records: Counter[str] = Counter()  # of Meta webhooks, by kind: message, ...
        self.produce_seconds = LatencyHistogram()
        self._topic = produce_topic
        self._in_flight = in_flight
        self._buffered = buffered
        self._withdrawn = withdrawn
        self._renewals = renewals
        self._reachable = reachable
        self._refusals = refusals
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        pushes = CounterMetricFamily(
            "uplink_ingress_pushes", "Pushes answered, by HTTP status code", labels=["code"]
        )
        for code in sorted({200, 400, 401, 413, 503} | set(self.pushes)):
            pushes.add_metric([str(code)], self.pushes[code])
        yield pushes
        yield self.produce_seconds.family(
            "uplink_ingress_produce_seconds",
            "Time from produce to the broker's acknowledgement",
            {"topic": self._topic},
        )
        yield GaugeMetricFamily(
            "uplink_ingress_in_flight",
            "Records awaiting the broker's acknowledgement",
            value=self._in_flight(),
        )
        yield _by_label(
            "uplink_ingress_quarantined",
            "Bodies that were not pushes, kept in the quarantine topic",
            "reason",
            self.quarantined,
            ("not_a_push", "too_large"),
        )
        yield _by_label(
            "uplink_ingress_shed",
            "Pushes answered 503 because they could not be made durable",
            "cause",
            self.shed,
            ("kafka", "unreachable", "overloaded", "schema", "refused"),
        )
        yield _by_label(
            "uplink_ingress_kafka_refusals",
            "Times Kafka refused our credentials (authentication) or a write (authorization)",
            "kind",
            self._refusals(),
            ("authentication", "authorization"),
        )
        yield GaugeMetricFamily(
            "uplink_ingress_kafka_reachable",
            "1 while a broker has answered lately; 0: pushes are answered 503 at once",
            value=1 if self._reachable() else 0,
        )
        yield GaugeMetricFamily(
            "uplink_ingress_buffered_records",
            "Records in the producer's buffer, not yet acknowledged (refused ones included)",
            value=self._buffered(),
        )
        yield CounterMetricFamily(
            "uplink_ingress_withdrawn_records",
            "Records of pushes answered 503 withdrawn from the producer's buffer, never sent",
            value=self._withdrawn(),
        )
        yield CounterMetricFamily(
            "uplink_ingress_producer_renewals",
            "Producers replaced after Kafka refused their sequence numbers (their pushes got 503)",
            value=self._renewals(),
        )
        yield suppressed_family()
        yield _by_label(
            "uplink_ingress_meta_records",
            "Records made durable from Meta webhook POSTs, by kind",
            "kind",
            self.meta_records,
            ("message", "status", "event"),
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _by_label(
    name: str, documentation: str, label: str, counts: Counter[str], known: tuple[str, ...]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value in sorted(set(known) | set(counts)):
        family.add_metric([value], counts[value])
    return family
