"""Metrics: the counters the chain keeps, as Prometheus reads them (its own parser is the oracle)."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from failsoft.metrics import Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(m.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_answers_skips_and_rejections_are_counted_by_their_labels() -> None:
    m = Metrics()
    m.answer("churn", "gbm", None, 0.002, False)
    m.answer("churn", "default", "timeout", 0.05, True)
    m.skip("churn", "gbm", "timeout")
    m.reject("churn", "batch_too_large")
    m.unknown_input("churn", 2)
    got = samples(m)
    churn = ("model", "churn")
    assert got[("failsoft_requests_total", (churn, ("reason", "none"), ("tier", "gbm")))] == 1
    assert got[("failsoft_requests_total", (churn, ("reason", "timeout"), ("tier", "default")))] == 1
    assert got[("failsoft_tier_skips_total", (churn, ("reason", "timeout"), ("tier", "gbm")))] == 1
    assert got[("failsoft_rejected_requests_total", (("model", "churn"), ("why", "batch_too_large")))] == 1
    assert got[("failsoft_unknown_inputs_total", (("model", "churn"),))] == 2
    assert got[("failsoft_degraded_ratio", (("model", "churn"),))] == 0.5
    assert got[("failsoft_request_latency_seconds_count", (("model", "churn"),))] == 2


def test_gauges_are_read_at_scrape_time_and_each_metrics_has_its_own_registry() -> None:
    from prometheus_client.core import GaugeMetricFamily

    a, b = Metrics(), Metrics()
    level = {"now": 1.0}

    def gauge() -> list[GaugeMetricFamily]:
        g = GaugeMetricFamily("failsoft_test_level", "a test gauge")
        g.add_metric([], level["now"])
        return [g]

    a.gauges.append(gauge)
    assert samples(a)[("failsoft_test_level", ())] == 1.0
    level["now"] = 7.0
    assert samples(a)[("failsoft_test_level", ())] == 7.0
    assert ("failsoft_test_level", ()) not in samples(b), "nothing is global"
