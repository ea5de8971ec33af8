"""Metric pieces shared by every uplink process: counted in plain ints, rendered at scrape time.

prometheus-client's Counter and Histogram take a lock per update; each process here updates its
metrics from one event loop only, so plain ints do, and a collector turns them into metric
families when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import HistogramMetricFamily

from uplink.resources import Resource

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


class MetricsServer(Resource):
    """A process's registry as Prometheus text on ``port`` (its own thread). ``start()``/
    ``stop()`` (both safe twice) or ``async with``; ``port`` 0 picks a free one (``bound``)."""

    def __init__(self, registry: CollectorRegistry, port: int, host: str = "0.0.0.0") -> None:
        self._registry = registry
        self._port = port
        self._host = host
        self._server: WSGIServer | None = None

    @property
    def bound(self) -> int:
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_port)

    async def start(self) -> None:
        if self._server is None:
            self._server, _ = start_http_server(
                self._port, addr=self._host, registry=self._registry
            )

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
