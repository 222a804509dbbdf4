"""What a running portfolio looks like from outside: model descriptions (``GET /v1/models``) and the
gauges read at each ``/metrics`` scrape. Read-only: nothing here changes a chain."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec
from msgspec import UNSET, UnsetType
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from failsoft.audit.notify import Notifier
from failsoft.chain import Chain
from failsoft.features.online import OnlineTable
from failsoft.metrics import Metrics
from failsoft.resilience import BreakerState

__all__ = ["BreakerInfo", "FeatureInfo", "ModelInfo", "TierInfo", "describe", "gauges", "without_urls"]

_STATE_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class BreakerInfo(msgspec.Struct, frozen=True):
    state: str
    failure_share: float
    times_opened: int
    retry_after_s: float


class TierInfo(msgspec.Struct, frozen=True):
    """One tier as ``GET /v1/models`` shows it; the fields of other kinds of tier are left out (UNSET)."""

    name: str
    kind: str
    answered: int
    # remote tiers: where the model lives (shown to token holders only)
    url: str | UnsetType = UNSET
    # call tiers: the guard and its counters
    timeout_ms: float | UnsetType = UNSET
    breaker: BreakerInfo | UnsetType = UNSET
    in_flight: int | UnsetType = UNSET
    max_concurrency: int | UnsetType = UNSET
    skipped: dict[str, int] | UnsetType = UNSET
    # in-process tiers: how they run
    source: str | UnsetType | None = UNSET
    compiled: bool | UnsetType = UNSET
    inline: bool | UnsetType = UNSET
    single_row_us: float | UnsetType | None = UNSET
    inline_rows: int | UnsetType | None = UNSET
    own_method_from_rows: bool | UnsetType = UNSET
    run: str | UnsetType = UNSET
    processes: int | UnsetType | None = UNSET
    can_hold_interpreter: bool | UnsetType = UNSET
    load: str | UnsetType = UNSET  # "start", or "first_use" (tiers/loader.py)
    loaded: bool | UnsetType = UNSET  # whether its model is loaded now
    # the safe default
    origin: str | UnsetType | None = UNSET
    refreshed_at: float | UnsetType | None = UNSET
    value: Any = UNSET
    pinned: bool | UnsetType = UNSET
    set_by: str | UnsetType | None = UNSET


class FeatureInfo(msgspec.Struct, frozen=True):
    table: str
    columns: list[str]
    max_age_s: float | None
    entities: int
    newest_age_s: float | None
    lag_s: Any


class ModelInfo(msgspec.Struct, frozen=True):
    name: str
    version: str
    deadline_ms: float
    health: str
    inputs: list[str]
    features: list[FeatureInfo]
    chain: list[TierInfo]


def describe(chains: Mapping[str, Chain], metrics: Metrics) -> list[ModelInfo]:
    """Every model: its chain with each tier's counters and breaker, its health, inputs and features."""
    answered: dict[tuple[str, str], int] = {}
    for (m, tn, _), c in list(metrics.answers.items()):
        answered[(m, tn)] = answered.get((m, tn), 0) + c
    # each tier's skips by reason, in one pass (a pass per tier is quadratic at a thousand models)
    skipped: dict[tuple[str, str], dict[str, int]] = {}
    for (m, tn, r), c in list(metrics.skips.items()):
        skipped.setdefault((m, tn), {})[r] = c
    out = []
    # a snapshot: this may run in a thread (the console, /metrics) while a reload changes the table
    for name, chain in list(chains.items()):
        tiers = []
        for t in chain.tiers:
            b = t.breaker
            breaker = BreakerInfo(b.state.value, b.failure_share(), b.times_opened, round(b.retry_after(), 3))
            tiers.append(
                TierInfo(
                    **t.backend.describe(),
                    answered=answered.get((name, t.name), 0),
                    timeout_ms=t.timeout_s * 1000,
                    breaker=breaker,
                    in_flight=t.bulkhead.in_flight,
                    max_concurrency=t.bulkhead.limit,
                    skipped=skipped.get((name, t.name), {}),
                )
            )
        d = chain.default
        tiers.append(TierInfo(**d.describe(), answered=answered.get((name, d.name), 0)))
        features = [
            FeatureInfo(
                use.online.name,
                list(use.columns),
                use.max_age_s,
                len(use.online.values),
                use.online.newest_age_s(),
                use.online.lag.get("lag_s"),
            )
            for use in chain.lookups
        ]
        inputs = [f.name for f in chain.schema.features]
        health = str(chain.health)
        out.append(ModelInfo(name, chain.version, chain.deadline_s * 1000, health, inputs, features, tiers))
    return out


def without_urls(models: list[ModelInfo]) -> list[ModelInfo]:
    """The models with their backends' URLs left out (for callers without a token)."""
    return [
        msgspec.structs.replace(m, chain=[msgspec.structs.replace(t, url=UNSET) for t in m.chain])
        for m in models
    ]


def gauges(
    chains: Mapping[str, Chain], online: Mapping[str, OnlineTable], notifier: Notifier
) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "failsoft_breaker_state", "Breaker state: 0 closed, 1 half-open, 2 open", labels=["model", "tier"]
    )
    flight = GaugeMetricFamily(
        "failsoft_tier_in_flight", "Calls in flight per tier", labels=["model", "tier"]
    )
    chain_list = list(chains.items())  # a snapshot: /metrics is made in a thread
    for name, chain in chain_list:
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
    for name, chain in chain_list:
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
