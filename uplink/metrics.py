"""Metric pieces shared by every uplink process: counted in plain ints, rendered at scrape time.

prometheus-client's Counter and Histogram take a lock per update; each process here updates its
metrics from one event loop only, so plain ints do, and a collector turns them into metric
families when Prometheus scrapes.
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client.metrics_core import HistogramMetricFamily

# Latencies of Kafka round trips: milliseconds, with a tail up to the timeouts.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class LatencyHistogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        total, rows = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            rows.append((bound, float(total)))
        return rows

    def family(
        self, name: str, documentation: str, labels: dict[str, str]
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=list(labels))
        family.add_metric(list(labels.values()), self.cumulative(), self.sum)
        return family
