"""The operator's console: what ``GET /v1/console`` tells the page at ``/`` (assets in ``static/``).

``Recent`` keeps, per model, the last ten minutes of answers in five-second buckets (count, degraded,
latency samples, answers by tier), fed by a chain listener: an append on the request path, nothing more.
``console`` gathers one document for the page: every model with its health and why, its recent series,
chain and breakers, open audit items and shadow verdicts, so one poll draws everything.
"""

from __future__ import annotations

import functools
import time
from collections import Counter, deque
from importlib import resources
from typing import Any

from failsoft.chain import Answer

BUCKET_S = 5.0
BUCKETS = 120  # ten minutes
MIN_SPAN = 12  # a sparkline covers at least a minute
SAMPLES = 512  # latency samples kept per bucket (the first ones: enough for p50 and p99 on a sparkline)


class Bucket:
    __slots__ = ("closed", "degraded", "latencies", "n", "start", "tiers")

    def __init__(self, start: float) -> None:
        self.start = start
        self.n = 0
        self.degraded = 0
        self.latencies: list[float] = []
        self.tiers: Counter[str] = Counter()
        self.closed: dict[str, Any] | None = None  # the summary, once no answer can land in it any more

    def summary(self, now: float | None = None) -> dict[str, Any]:
        if self.closed is not None:
            return self.closed
        done = now is not None and now >= self.start + BUCKET_S
        lat = sorted(self.latencies)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 3)) if lat else (lambda q: None)
        out = {"t": self.start, "n": self.n, "degraded": self.degraded, "p50": pick(0.5), "p99": pick(0.99),
               "tiers": dict(self.tiers)}  # fmt: skip
        if done:
            self.closed = out
        return out


class Recent:
    """The last ``BUCKETS`` buckets of answers per model, by wall-clock time."""

    def __init__(self, models: list[str], clock: Any = time.time) -> None:
        self.clock = clock
        self.buckets: dict[str, deque[Bucket]] = {m: deque(maxlen=BUCKETS) for m in models}

    def observe(self, answer: Answer) -> None:
        o = answer.outcome
        ring = self.buckets.get(o.model)
        if ring is None:  # a model a reload added
            ring = self.buckets[o.model] = deque(maxlen=BUCKETS)
        now = self.clock()
        start = now - now % BUCKET_S
        if not ring or ring[-1].start != start:
            ring.append(Bucket(start))
        b = ring[-1]
        b.n += 1
        b.degraded += o.degraded
        b.tiers[o.tier] += 1
        if len(b.latencies) < SAMPLES:
            b.latencies.append(o.latency_ms)

    def series(self, model: str) -> dict[str, Any]:
        """The buckets from the first kept one (at most ten minutes back, at least a minute), empty ones
        included, oldest first, as columns (a hundred models' ten minutes stay a few hundred kilobytes):
        ``t0`` the first bucket's start, ``n``, ``degraded``, ``p50``, ``p99`` and ``tiers`` (tier -> its
        answers per bucket)."""
        rows = self._rows(model)
        tiers: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            for tier, c in r["tiers"].items():
                tiers.setdefault(tier, [0] * len(rows))[i] = c
        columns: dict[str, Any] = {k: [r[k] for r in rows] for k in ("n", "degraded", "p50", "p99")}
        return {"t0": rows[0]["t"], **columns, "tiers": tiers}

    def _rows(self, model: str) -> list[dict[str, Any]]:
        now = self.clock()
        last = now - now % BUCKET_S
        ring = self.buckets.get(model, ())
        have = {b.start: b for b in ring}
        span = MIN_SPAN
        if ring:
            span = min(BUCKETS, max(MIN_SPAN, int((last - ring[0].start) / BUCKET_S) + 1))
        starts = [last - BUCKET_S * i for i in range(span - 1, -1, -1)]
        return [(have[s] if s in have else Bucket(s)).summary(now) for s in starts]

    def last(self, model: str, seconds: float) -> list[Bucket]:
        """The buckets holding the answers of the last ``seconds`` (the oldest may start a little before)."""
        since = self.clock() - seconds
        return [b for b in self.buckets.get(model, ()) if b.start >= since - BUCKET_S]

    def window(self, model: str, seconds: float = 300.0) -> dict[str, Any]:
        """Answers, degraded share and latency quantiles over the last ``seconds``."""
        kept = self.last(model, seconds)
        n = sum(b.n for b in kept)
        merged = Bucket(0.0)
        merged.latencies = [x for b in kept for x in b.latencies]
        q = merged.summary()
        return {"answered": n, "degraded_share": round(sum(b.degraded for b in kept) / n, 4) if n else None,
                "p50": q["p50"], "p99": q["p99"]}  # fmt: skip


def histogram(
    recent: Recent, model: str, deadline_ms: float, seconds: float = 300.0, bins: int = 20
) -> dict[str, Any]:
    """The latency samples of the last ``seconds`` in ``bins`` equal bins from 0 to the deadline, and how
    many were over it."""
    samples = [x for b in recent.last(model, seconds) for x in b.latencies]
    width = deadline_ms / bins
    counts = [0] * bins
    over = 0
    for x in samples:
        if x > deadline_ms:
            over += 1
        else:
            counts[min(bins - 1, int(x / width))] += 1
    edges = [round(i * width, 3) for i in range(bins + 1)]
    return {"edges": edges, "counts": counts, "over": over, "samples": len(samples)}


def model_page(
    recent: Recent,
    info: dict[str, Any],
    reason: str,
    monitor: dict[str, Any] | None,
    events: list[Any],
    history: list[Any],
    shadow: Any,
) -> dict[str, Any]:
    """One model's page: its chain and counters, latency histogram, drift windows (newest first, at most
    eight), promotions, health events and shadow report."""
    if monitor is not None and "windows" in monitor:
        monitor = {**monitor, "windows": monitor["windows"][:8]}
    return {
        "model": info,
        "reason": reason,
        "recent": recent.window(info["name"]),
        "latency": histogram(recent, info["name"], info["deadline_ms"]),
        "monitor": monitor,
        "events": events,
        "history": history,
        "shadow": shadow,
    }


def console(
    recent: Recent,
    models: list[Any],
    states: dict[str, Any],
    audits: list[Any],
    shadows: dict[str, Any],
    defaults: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The page's document: ``models`` as ``describe`` gives them (builtins), the stored health states,
    the audit items not yet resolved, the shadow reports of models with candidates, and each model's safe
    default (its value, when it was computed or set, by whom)."""
    open_by_model = Counter(a["model"] for a in audits)
    out = []
    for m in models:
        state = states.get(m["name"])
        chain = [{k: t.get(k) for k in ("name", "kind", "answered", "in_flight", "skipped")}
                 | {"breaker": (t.get("breaker") or {}).get("state")} for t in m["chain"]]  # fmt: skip
        out.append(
            {
                "name": m["name"],
                "version": m["version"],
                "deadline_ms": m["deadline_ms"],
                "health": m["health"],
                "reason": state.reason if state is not None else "",
                "since": state.changed_at if state is not None else None,
                "recent": recent.window(m["name"]),
                "series": recent.series(m["name"]),
                "chain": chain,
                "audits_open": open_by_model[m["name"]],
                "shadow": shadows.get(m["name"]),
                # online feature tables: how long ago their newest value landed, against the bound
                "features": [
                    {k: f.get(k) for k in ("table", "newest_age_s", "max_age_s")} for f in m["features"]
                ],
                "default": {
                    k: defaults[m["name"]].get(k) for k in ("value", "refreshed_at", "pinned", "set_by")
                }
                if m["name"] in defaults
                else None,
            }
        )
    return {"now": recent.clock(), "bucket_s": BUCKET_S, "models": out, "audits": audits}


@functools.cache
def asset(name: str) -> bytes:
    """A file of the page, read from the package once."""
    return resources.files("failsoft.server").joinpath("static", name).read_bytes()


ASSETS = {
    "console.js": b"text/javascript; charset=utf-8",
    "console.css": b"text/css; charset=utf-8",
    "favicon.svg": b"image/svg+xml",
}


def page() -> bytes:
    return asset("console.html")
