"""The media worker's own metrics, beside the runtime's: registered in the worker's registry."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from uplink.metrics import LatencyHistogram

# Downloads: from tens of milliseconds to minutes (100 MiB over a slow link, with retries).
DOWNLOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class MediaMetrics:
    def __init__(self) -> None:
        # fetched, already_stored, dead_lettered
        self.outcomes: Counter[str] = Counter()
        self.bytes = 0
        self.retries = 0  # download attempts that failed and were tried again
        self.download_seconds = LatencyHistogram(DOWNLOAD_BUCKETS)
        self.in_flight: Callable[[], int] = lambda: 0

    def collect(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "uplink_media_records", "Media pushes finished, by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self.outcomes.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield CounterMetricFamily(
            "uplink_media_fetched_bytes", "Bytes downloaded and kept", value=self.bytes
        )
        yield CounterMetricFamily(
            "uplink_media_download_retries", "Download attempts retried", value=self.retries
        )
        yield GaugeMetricFamily(
            "uplink_media_in_flight", "Media pushes being processed", value=self.in_flight()
        )
        yield self.download_seconds.family(
            "uplink_media_download_seconds", "One object's download, retries included", {}
        )
