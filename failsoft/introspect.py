"""What a running portfolio looks like from outside: model descriptions (``GET /v1/models``) and the
gauges read at each ``/metrics`` scrape. Read-only: nothing here changes a chain."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from failsoft.audit.notify import Notifier
from failsoft.chain import Chain
from failsoft.features.online import OnlineTable
from failsoft.metrics import Metrics
from failsoft.resilience import BreakerState

__all__ = ["describe", "gauges"]

_STATE_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


def describe(chains: Mapping[str, Chain], metrics: Metrics) -> list[dict[str, Any]]:
    """Every model: its chain with each tier's counters and breaker, its health, inputs and features."""
    out = []
    for name, chain in chains.items():
        tiers = []
        for t in chain.tiers:
            skips = {r: c for (m, tn, r), c in metrics.skips.items() if m == name and tn == t.name}
            answered = sum(c for (m, tn, _), c in metrics.answers.items() if m == name and tn == t.name)
            tiers.append(
                {
                    **t.backend.describe(),
                    "timeout_ms": t.timeout_s * 1000,
                    "breaker": {
                        "state": t.breaker.state.value,
                        "failure_share": t.breaker.failure_share(),
                        "times_opened": t.breaker.times_opened,
                        "retry_after_s": round(t.breaker.retry_after(), 3),
                    },
                    "in_flight": t.bulkhead.in_flight,
                    "max_concurrency": t.bulkhead.limit,
                    "answered": answered,
                    "skipped": skips,
                }
            )
        d = chain.default
        answered = sum(c for (m, tn, _), c in metrics.answers.items() if m == name and tn == d.name)
        tiers.append({**d.describe(), "answered": answered})
        out.append(
            {
                "name": name,
                "version": chain.version,
                "deadline_ms": chain.deadline_s * 1000,
                "health": str(chain.health),
                "inputs": [f.name for f in chain.schema.features],
                "features": [
                    {
                        "table": use.online.name,
                        "columns": list(use.columns),
                        "max_age_s": use.max_age_s,
                        "entities": len(use.online.values),
                        "newest_age_s": use.online.newest_age_s(),
                        "lag_s": use.online.lag.get("lag_s"),
                    }
                    for use in chain.lookups
                ],
                "chain": tiers,
            }
        )
    return out


def gauges(
    chains: Mapping[str, Chain], online: Mapping[str, OnlineTable], notifier: Notifier
) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "failsoft_breaker_state", "Breaker state: 0 closed, 1 half-open, 2 open", labels=["model", "tier"]
    )
    flight = GaugeMetricFamily(
        "failsoft_tier_in_flight", "Calls in flight per tier", labels=["model", "tier"]
    )
    for name, chain in chains.items():
        for t in chain.tiers:
            state.add_metric([name, t.name], _STATE_VALUE[t.breaker.state])
            flight.add_metric([name, t.name], t.bulkhead.in_flight)
    default_age = GaugeMetricFamily(
        "failsoft_default_age_seconds",
        "Seconds since a model's safe default was last computed or set by a person",
        labels=["model", "tier"],
    )
    pinned = GaugeMetricFamily(
        "failsoft_default_pinned", "1 while a model's safe default is a person's pinned value",
        labels=["model", "tier"],
    )  # fmt: skip
    now = time.time()
    for name, chain in chains.items():
        d = chain.default
        if d.refreshed_at is not None:
            default_age.add_metric([name, d.name], max(0.0, now - d.refreshed_at))
        pinned.add_metric([name, d.name], float(d.pinned))
    n = notifier
    webhooks = CounterMetricFamily(
        "failsoft_webhook_deliveries", "Audit webhook deliveries by outcome", labels=["outcome"]
    )
    for outcome, count in (("sent", n.sent), ("failed", n.failed), ("dropped", n.dropped)):
        webhooks.add_metric([outcome], count)
    metrics: list[Metric] = [state, flight, default_age, pinned, webhooks]
    if online:
        lag = GaugeMetricFamily(
            "failsoft_feature_lag_seconds",
            "available_at - event_time over a table's last day of rows (p50, p95, max)",
            labels=["table", "stat"],
        )
        age = GaugeMetricFamily(
            "failsoft_feature_newest_age_seconds",
            "Seconds since a feature table's newest value landed",
            labels=["table"],
        )
        entities = GaugeMetricFamily(
            "failsoft_feature_entities", "Entities held by a table's online lookup", labels=["table"]
        )
        for name, table in online.items():
            for stat, value in table.lag.get("lag_s", {}).items():
                lag.add_metric([name, stat], value)
            if (newest := table.newest_age_s()) is not None:
                age.add_metric([name], newest)
            entities.add_metric([name], len(table.values))
        metrics += [lag, age, entities]
    return iter(metrics)
