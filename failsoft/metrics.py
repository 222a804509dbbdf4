"""Counters the request path updates in nanoseconds, exported in Prometheus format at scrape time.

The hot path touches plain dicts of ints (no locks, no label lookups); a custom collector turns them into
Prometheus families when ``/metrics`` is read. Each portfolio has its own registry: nothing is global.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Exemplar

from failsoft import tracing

# Seconds. Fine at the bottom: the safe default answers in microseconds, a healthy tier in a millisecond.
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    __slots__ = ("buckets", "counts", "exemplars", "total")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        # while traces are on: per bucket, the last (trace id, value, time) that fell in it
        self.exemplars: list[tuple[str, float, float] | None] | None = None

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value

    def exemplar(self, value: float, trace_id: str | None) -> None:
        """A slow bucket links to a trace (OpenMetrics exemplars, on ``/metrics`` to a scraper that asks for
        OpenMetrics)."""
        if trace_id is None:
            return
        if self.exemplars is None:
            self.exemplars = [None] * (len(self.buckets) + 1)
        self.exemplars[bisect.bisect_left(self.buckets, value)] = (trace_id, value, time.time())

    def with_exemplars(self) -> list[Any]:
        """``cumulative()``, each bucket with its exemplar where it has one."""
        out: list[Any] = []
        assert self.exemplars is not None
        for (edge, count), kept in zip(self.cumulative(), self.exemplars, strict=True):
            out.append(
                (edge, count)
                if kept is None
                else (edge, count, Exemplar({"trace_id": kept[0]}, kept[1], kept[2]))
            )
        return out

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper edge, count at or under it) per bucket, as Prometheus histograms are written."""
        total, out = 0, []
        for edge, c in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += c
            out.append(("+Inf" if edge == float("inf") else repr(edge), total))
        return out

    def quantile(self, q: float) -> float:
        """An upper bound of the q-quantile (the bucket edge it falls under)."""
        n = sum(self.counts)
        if n == 0:
            return 0.0
        seen = 0
        for edge, c in zip((*self.buckets, float("inf")), self.counts, strict=True):
            seen += c
            if seen >= q * n:
                return edge
        return float("inf")


class Metrics:
    """``latency_histograms``: which models get a latency histogram on /metrics (18 series each): "all",
    "none", or the N with the most answers (the others summed into one, ``model="_other"``)."""

    def __init__(self, latency_histograms: str | int = "all") -> None:
        self.latency_histograms = latency_histograms
        self.answers: dict[tuple[str, str, str], int] = {}
        self.skips: dict[tuple[str, str, str], int] = {}
        self.degraded: dict[str, int] = {}
        self.latency: dict[str, Histogram] = {}
        self.rejected: dict[tuple[str, str], int] = {}
        self.unknown_inputs: dict[str, int] = {}
        self.gauges: list[Callable[[], Iterator[Metric]]] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def answer(self, model: str, tier: str, reason: str | None, latency_s: float, degraded: bool) -> None:
        key = (model, tier, reason or "none")
        answers = self.answers
        answers[key] = answers.get(key, 0) + 1
        if degraded:
            self.degraded[model] = self.degraded.get(model, 0) + 1
        hist = self.latency.get(model)
        if hist is None:
            hist = self.latency[model] = Histogram()
        hist.observe(latency_s)
        if tracing.TRACER is not None:  # traces off: nothing more than this check
            hist.exemplar(latency_s, tracing.trace_id())

    def skip(self, model: str, tier: str, reason: str) -> None:
        key = (model, tier, reason)
        self.skips[key] = self.skips.get(key, 0) + 1

    def unknown_input(self, model: str, keys: int) -> None:
        self.unknown_inputs[model] = self.unknown_inputs.get(model, 0) + keys

    def reject(self, model: str, why: str) -> None:
        key = (model, why)
        self.rejected[key] = self.rejected.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        req = CounterMetricFamily(
            "failsoft_requests",
            "Answers given, by model, answering tier and reason",
            labels=["model", "tier", "reason"],
        )
        for (m, t, r), c in list(self.answers.items()):
            req.add_metric([m, t, r], c)
        yield req
        skip = CounterMetricFamily(
            "failsoft_tier_skips",
            "Tiers passed over, by model, tier and reason",
            labels=["model", "tier", "reason"],
        )
        for (m, t, r), c in list(self.skips.items()):
            skip.add_metric([m, t, r], c)
        yield skip
        bad = CounterMetricFamily(
            "failsoft_rejected_requests", "Malformed requests answered with a 4xx", labels=["model", "why"]
        )
        for (m, w), c in list(self.rejected.items()):
            bad.add_metric([m, w], c)
        yield bad
        unknown = CounterMetricFamily(
            "failsoft_unknown_inputs",
            "Keys in requests that are no declared input (a misspelt feature is answered without it)",
            labels=["model"],
        )
        for m, c in list(self.unknown_inputs.items()):
            unknown.add_metric([m], c)
        yield unknown
        lat = HistogramMetricFamily(
            "failsoft_request_latency_seconds", "Time to answer, by model", labels=["model"]
        )
        ratio = GaugeMetricFamily(
            "failsoft_degraded_ratio", "Share of answers not from the primary tier", labels=["model"]
        )
        kept = list(self.latency.items())
        for m, h in kept:
            n = sum(h.counts)
            ratio.add_metric([m], self.degraded.get(m, 0) / n if n else 0.0)
        limit = self.latency_histograms
        if limit != "none":
            if isinstance(limit, int) and len(kept) > limit:
                kept.sort(key=lambda item: -sum(item[1].counts))
                other = Histogram()
                for _, h in kept[limit:]:
                    other.counts = [a + b for a, b in zip(other.counts, h.counts, strict=True)]
                    other.total += h.total
                kept = [*kept[:limit], ("_other", other)]
            for m, h in kept:
                buckets = h.cumulative() if h.exemplars is None else h.with_exemplars()
                lat.add_metric([m], buckets, h.total)
            yield lat
        yield ratio
        for gauge in self.gauges:
            yield from gauge()

    def snapshot(self) -> dict[str, Any]:
        return {
            "answers": {"/".join(k): v for k, v in self.answers.items()},
            "skips": {"/".join(k): v for k, v in self.skips.items()},
        }
