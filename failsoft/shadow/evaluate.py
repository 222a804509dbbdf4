"""Judging shadow candidates: what they did with their copies, how they compare with live on the same
labelled requests, and whether the promotion policy is met, rule by rule.

The paired difference of the metric (candidate minus live, on the same requests) comes with a 95%
interval: DeLong's test for ROC AUC (the two AUCs are correlated: same requests, same labels), a paired
bootstrap of the per-request differences for the metrics that are means (accuracy, log loss, Brier, MAE,
hit rate) and of whole resamples for RMSE.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from failsoft.config import PromotionSpec
from failsoft.durations import format_duration
from failsoft.store import Store
from failsoft.store.base import LogReader
from failsoft.store.shadow import ShadowRecords

Array = npt.NDArray[np.float64]

# lower is better for these; the "improvement" is live minus candidate
LOWER_IS_BETTER = {"log_loss", "brier", "mae", "rmse"}
_EPS = 1e-15


# ---- metrics and their intervals -------------------------------------------------------------------------


def delong(labels: Array, a: Array, b: Array) -> tuple[float, float, float]:
    """AUC(b) - AUC(a) on the same cases, and its standard error (DeLong, DeLong & Clarke-Pearson 1988,
    in the fast form of Sun & Xu 2014)."""
    pos = labels == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m < 2 or n < 2:
        return math.nan, math.nan, math.nan
    from scipy.stats import rankdata  # imported when first judged: scipy.stats takes a second to import

    v10, v01, aucs = [], [], []
    for s in (a, b):
        x, y = s[pos], s[~pos]
        tx, ty, tz = rankdata(x), rankdata(y), rankdata(np.concatenate([x, y]))
        aucs.append((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    return float(aucs[1] - aucs[0]), float(max(var, 0.0) ** 0.5), float(aucs[0])


def per_request(metric: str, labels: Array, scores: Array) -> Array:
    """Per-request values whose mean is the metric (accuracy, log loss, Brier, MAE; hit rate is computed
    before, as 0/1 hits)."""
    if metric == "accuracy":
        return np.asarray((scores >= 0.5) == (labels == 1.0), dtype=np.float64)
    if metric == "log_loss":
        p = np.clip(scores, _EPS, 1 - _EPS)
        return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    if metric == "brier":
        return (scores - labels) ** 2
    if metric == "mae":
        return np.abs(scores - labels)
    if metric == "hit_rate":
        return np.asarray(scores, dtype=np.float64)
    raise ValueError(metric)


def paired(
    metric: str, labels: Array, live: Array, cand: Array, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """The metric for live and candidate on the same requests, candidate minus live, and its 95% interval."""
    n = len(labels)
    if metric == "auc":
        diff, se, live_v = delong(labels, live, cand)
        z = 1.959963984540054
        lo, hi = diff - z * se, diff + z * se
        return {"live": live_v, "candidate": live_v + diff, "difference": diff, "ci95": [lo, hi],
                "method": "DeLong"}  # fmt: skip
    rng = np.random.default_rng(seed)
    if metric == "rmse":
        se_live, se_cand = (live - labels) ** 2, (cand - labels) ** 2
        stats = []
        for _ in range(resamples):
            i = rng.integers(0, n, n)
            stats.append(math.sqrt(se_cand[i].mean()) - math.sqrt(se_live[i].mean()))
        live_v, cand_v = math.sqrt(se_live.mean()), math.sqrt(se_cand.mean())
        lo, hi = np.percentile(stats, [2.5, 97.5])
        return {"live": live_v, "candidate": cand_v, "difference": cand_v - live_v,
                "ci95": [float(lo), float(hi)], "method": f"paired bootstrap ({resamples})"}  # fmt: skip
    a, b = per_request(metric, labels, live), per_request(metric, labels, cand)
    d = b - a
    means = np.empty(resamples)
    chunk = max(1, 5_000_000 // max(n, 1))
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        means[start : start + k] = d[rng.integers(0, n, (k, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"live": float(a.mean()), "candidate": float(b.mean()), "difference": float(d.mean()),
            "ci95": [float(lo), float(hi)], "method": f"paired bootstrap ({resamples})"}  # fmt: skip


# ---- reading the log -------------------------------------------------------------------------------------


def _rows(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float) and math.isfinite(v):
        return float(v)
    return None


def _pairs(metric: str, k: int, triples: list[tuple[Any, Any, Any]]) -> tuple[Array, Array, Array]:
    """(labels, live values, candidate values) per labelled row; rows that do not fit the metric are
    left out (a label that is not 0/1 for a classifier metric, say)."""
    ls, lv, cv = [], [], []
    for label, live_out, cand_out in triples:
        live_rows, cand_rows = _rows(live_out), _rows(cand_out)
        labels = label if isinstance(label, list) and len(live_rows) > 1 else [label]
        if not (len(labels) == len(live_rows) == len(cand_rows)):
            continue
        for y, a, b in zip(labels, live_rows, cand_rows, strict=True):
            if metric == "hit_rate":
                if not isinstance(a, list) or not isinstance(b, list):
                    continue
                ls.append(1.0)
                lv.append(float(y in a[:k]))
                cv.append(float(y in b[:k]))
                continue
            yv, av, bv = _number(y), _number(a), _number(b)
            if yv is None or av is None or bv is None:
                continue
            if metric in {"auc", "accuracy", "log_loss", "brier"} and yv not in (0.0, 1.0):
                continue
            ls.append(yv)
            lv.append(av)
            cv.append(bv)
    return np.array(ls), np.array(lv), np.array(cv)


def _agree(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return a[:1] == b[:1]  # ranked lists: the same first item
    fa, fb = _number(a), _number(b)
    if fa is not None and fb is not None:
        if 0.0 <= fa <= 1.0 and 0.0 <= fb <= 1.0:
            return (fa >= 0.5) == (fb >= 0.5)  # probabilities: the same decision
        return abs(fa - fb) <= 0.01 * max(abs(fa), abs(fb), 1e-12)
    return bool(a == b)


class Quantiles(msgspec.Struct, frozen=True):
    p50: float | None
    p99: float | None
    n: int


class Comparison(msgspec.Struct, frozen=True, omit_defaults=True):
    """The policy's metric on the labelled pairs: live, candidate, their paired difference and its 95%
    interval (and the same as an improvement: candidate better is positive), once there are pairs."""

    name: str
    pairs: int
    live: float | None = None
    candidate: float | None = None
    difference: float | None = None
    ci95: list[float] | None = None
    method: str | None = None
    improvement_ci95: list[float] | None = None


class Rule(msgspec.Struct, frozen=True):
    rule: str
    passed: bool
    value: Any
    threshold: Any
    detail: str


class Verdict(msgspec.Struct, frozen=True):
    passed: bool
    failing: list[str]
    rules: list[Rule]
    require_approval: bool


class CandidateReport(msgspec.Struct, frozen=True):
    """What a shadow candidate did with its copies since the last flip, how it compares with the live
    primary, and the policy's verdict rule by rule."""

    candidate: str
    live: str
    since: float | None
    shadow_s: float
    mirrored: int
    dropped: int
    logged: int
    answered: int
    errors: int
    timeouts: int
    failures: dict[str, int]
    error_rate: float
    timeout_rate: float
    latency_ms: Quantiles
    live_latency_ms: Quantiles
    agreement: float | None
    compared: int
    labelled_pairs: int
    metric: Comparison
    verdict: Verdict


def candidate_report(
    store: Store,
    model: str,
    candidate: str,
    live: str,
    policy: PromotionSpec,
    now: float | None = None,
    log: LogReader | None = None,
) -> CandidateReport:
    """``log``: where the answers are read (the lake), when not from ``store``."""
    now = time.time() if now is None else now
    ev = ShadowRecords(store, log).evidence(model, candidate, live)
    count, answered, timeouts = ev.logged, ev.answered, ev.timeouts
    errors = count - answered - timeouts
    agreed = compared = 0
    for lv_out, sh_out in ev.pairs:
        for a, b in zip(_rows(lv_out), _rows(sh_out), strict=False):
            compared += 1
            agreed += _agree(a, b)
    labels, live_v, cand_v = _pairs(policy.metric, policy.k, ev.labelled)
    n_pairs = len(labels)
    metric = Comparison(policy.metric, n_pairs)
    if n_pairs >= 2:
        found = paired(policy.metric, labels, live_v, cand_v)
        sign = -1.0 if policy.metric in LOWER_IS_BETTER else 1.0
        lo, hi = (sign * x for x in found["ci95"])
        metric = Comparison(policy.metric, n_pairs, improvement_ci95=sorted([lo, hi]), **found)
    shadow_s = now - ev.first if ev.first is not None else 0.0
    facts: dict[str, Any] = dict(
        candidate=candidate,
        live=live,
        since=ev.since or None,
        shadow_s=round(shadow_s, 1),
        mirrored=ev.mirrored,
        dropped=ev.dropped,
        logged=count,
        answered=answered,
        errors=errors,
        timeouts=timeouts,
        failures=ev.failures,
        error_rate=errors / count if count else 0.0,
        timeout_rate=timeouts / count if count else 0.0,
        latency_ms=_quantiles(np.array(ev.latency_ms)),
        live_latency_ms=_quantiles(np.array(ev.live_latency_ms)),
        agreement=agreed / compared if compared else None,
        compared=compared,
        labelled_pairs=n_pairs,
        metric=metric,
    )
    return CandidateReport(**facts, verdict=verdict(facts, policy))


def _quantiles(x: Array) -> Quantiles:
    if len(x) == 0:
        return Quantiles(None, None, 0)
    p50, p99 = np.percentile(x, [50, 99])
    return Quantiles(round(float(p50), 3), round(float(p99), 3), len(x))


def verdict(r: dict[str, Any], policy: PromotionSpec) -> Verdict:
    """Every rule of the policy with its value, threshold and whether it passes."""
    rules: list[Rule] = []

    def rule(name: str, passed: bool, value: Any, threshold: Any, detail: str) -> None:
        rules.append(Rule(name, bool(passed), value, threshold, detail))

    shadowed = f"in the shadows {format_duration(r['shadow_s'])} of {format_duration(policy.min_shadow_s)}"
    rule("min_shadow_duration", r["shadow_s"] >= policy.min_shadow_s, r["shadow_s"], policy.min_shadow_s,
         shadowed)  # fmt: skip
    n = r["labelled_pairs"]
    rule("min_labelled_pairs", n >= policy.min_labelled, n, policy.min_labelled,
         f"{n} labelled pairs, {policy.min_labelled} needed")  # fmt: skip
    m: Comparison = r["metric"]
    ci = m.improvement_ci95
    if ci is None or any(math.isnan(x) for x in ci):
        rule("non_inferiority", False, None, -policy.margin, f"no interval for {m.name} yet")
    else:
        better = "lower" if m.name in LOWER_IS_BETTER else "higher"
        rule("non_inferiority", ci[0] >= -policy.margin, round(ci[0], 6), -policy.margin,
             f"{m.name} ({better} is better) live {m.live:.4f}, candidate {m.candidate:.4f}; "
             f"improvement 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}] vs margin -{policy.margin:g}")  # fmt: skip
    rule("max_error_rate", r["error_rate"] <= policy.max_error_rate, round(r["error_rate"], 6),
         policy.max_error_rate, f"{r['errors']} errors in {r['logged']} copies")  # fmt: skip
    rule("max_timeout_rate", r["timeout_rate"] <= policy.max_timeout_rate, round(r["timeout_rate"], 6),
         policy.max_timeout_rate, f"{r['timeouts']} timeouts in {r['logged']} copies")  # fmt: skip
    if policy.max_p99_ms is not None:
        p99 = r["latency_ms"].p99
        rule("max_p99_latency", p99 is not None and p99 <= policy.max_p99_ms, p99, policy.max_p99_ms,
             f"p99 {p99} ms" if p99 is not None else "no answers yet")  # fmt: skip
    failing = [x.rule for x in rules if not x.passed]
    return Verdict(not failing, failing, rules, policy.require_approval)
