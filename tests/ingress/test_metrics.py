"""The hand-counted metrics render as Prometheus text that prometheus-client itself parses."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from ingress.metrics import IngressMetrics


def test_render_is_valid_prometheus_text_with_cumulative_buckets() -> None:
    metrics = IngressMetrics("t", in_flight=lambda: 3)
    metrics.pushes[200] += 2
    metrics.shed["overloaded"] += 1
    for seconds in (0.001, 0.0011, 0.3, 99.0):  # 0.001 is on a bound: "le" includes it
        metrics.produce_seconds.observe(seconds)

    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert samples[("uplink_ingress_pushes_total", (("code", "200"),))] == 2
    assert samples[("uplink_ingress_pushes_total", (("code", "503"),))] == 0
    assert samples[("uplink_ingress_shed_total", (("cause", "overloaded"),))] == 1
    assert samples[("uplink_ingress_in_flight", ())] == 3
    bucket = "uplink_ingress_produce_seconds_bucket"
    assert samples[(bucket, (("le", "0.001"), ("topic", "t")))] == 1
    assert samples[(bucket, (("le", "0.0025"), ("topic", "t")))] == 2
    assert samples[(bucket, (("le", "0.5"), ("topic", "t")))] == 3
    assert samples[(bucket, (("le", "10.0"), ("topic", "t")))] == 3
    assert samples[(bucket, (("le", "+Inf"), ("topic", "t")))] == 4
    assert samples[("uplink_ingress_produce_seconds_count", (("topic", "t"),))] == 4
