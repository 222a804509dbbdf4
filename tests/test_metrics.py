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


def test_latency_histograms_can_be_limited_to_the_busiest_models_or_turned_off() -> None:
    """At a thousand models the per-model histograms are most of a scrape: the N busiest keep theirs, the
    rest are summed into one labelled _other (nothing is lost from the total), or there are none."""
    answers = {"hot": 5, "warm": 3, "cold": 1, "colder": 1}

    def fed(limit: str | int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        m = Metrics(latency_histograms=limit)
        for model, n in answers.items():
            for _ in range(n):
                m.answer(model, "cpu", None, 0.001, False)
        return samples(m)

    def counts(got: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
        name = "failsoft_request_latency_seconds_count"
        return {labels[0][1]: v for (n, labels), v in got.items() if n == name}

    assert counts(fed("all")) == answers
    assert counts(fed(2)) == {"hot": 5, "warm": 3, "_other": 2}
    assert counts(fed("none")) == {} and ("failsoft_degraded_ratio", (("model", "cold"),)) in fed("none")
