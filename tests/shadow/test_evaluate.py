"""The statistics of the shadow report against independent computations, and the policy rule by rule on
a real SQLite log."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from failsoft.config import PromotionSpec
from failsoft.shadow.evaluate import CandidateReport, candidate_report, delong, paired
from failsoft.store import open_store


def test_delong_aucs_match_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(float)
    a, b = np.round(rng.random(500), 1), np.round(rng.random(500), 2)  # many ties
    diff, _, live_auc = delong(y, a, b)
    assert live_auc == pytest.approx(roc_auc_score(y, a))
    assert diff == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))


def test_accuracy_interval_matches_scipy_paired_bootstrap() -> None:
    rng = np.random.default_rng(2)
    n = 3000
    y = rng.integers(0, 2, n).astype(float)
    live = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    cand = np.clip(y * 0.4 + rng.random(n) * 0.6, 0, 1)
    got = paired("accuracy", y, live, cand, resamples=4000)
    a = ((live >= 0.5) == (y == 1)).astype(float)
    b = ((cand >= 0.5) == (y == 1)).astype(float)
    ref = stats.bootstrap((b - a,), np.mean, n_resamples=4000, method="percentile", random_state=3)
    assert got["difference"] == pytest.approx(float((b - a).mean()))
    assert got["ci95"][0] == pytest.approx(ref.confidence_interval.low, abs=0.004)
    assert got["ci95"][1] == pytest.approx(ref.confidence_interval.high, abs=0.004)


def test_delong_interval_matches_a_paired_bootstrap() -> None:
    rng = np.random.default_rng(4)
    n = 1500
    y = rng.integers(0, 2, n).astype(float)
    live = y * 0.8 + rng.normal(0, 1, n)
    cand = y * 1.1 + rng.normal(0, 1, n)
    diff, se, live_auc = delong(y, live, cand)
    assert live_auc == pytest.approx(roc_auc_score(y, live))
    assert diff == pytest.approx(roc_auc_score(y, cand) - roc_auc_score(y, live))
    boots = []
    for _ in range(600):
        i = rng.integers(0, n, n)
        boots.append(roc_auc_score(y[i], cand[i]) - roc_auc_score(y[i], live[i]))
    assert se == pytest.approx(float(np.std(boots)), rel=0.15)
    got = paired("auc", y, live, cand)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    assert got["ci95"][0] == pytest.approx(lo, abs=0.01) and got["ci95"][1] == pytest.approx(hi, abs=0.01)


def fill(db: Path, quality: float, n: int = 800, error_every: int = 0, age_s: float = 0.0) -> None:
    """A log with live answers by "cpu" and shadow answers by "cand" (whose scores are ``quality``
    times as informative), labels for every request."""
    store = open_store(f"sqlite:///{db}")
    store.connect()
    rng = np.random.default_rng(5)
    now = time.time() - age_s
    rows, labels = [], []
    for i in range(n):
        y = int(rng.integers(0, 2))
        live = float(np.clip(0.5 + (y - 0.5) * 0.3 + rng.normal(0, 0.25), 0, 1))
        cand = float(np.clip(0.5 + (y - 0.5) * 0.3 * quality + rng.normal(0, 0.25), 0, 1))
        rid = f"r{i}"
        rows.append((f"{rid}-l", rid, "m", "1", "cpu", "live", False, None, [live], None, 1.0, now + i))
        failed = error_every and i % error_every == 0
        reason = "error" if failed else None
        rows.append((f"{rid}-s", rid, "m", "1", "cand", "shadow", False, reason, None if failed else [cand],
                     None, 2.0 + i % 7, now + i))  # fmt: skip
        labels.append((rid, msgspec.json.encode(y).decode(), now, now))
    store.insert_predictions(rows)
    for lab in labels:
        store.execute("INSERT INTO labels VALUES (?, ?, ?, ?)", lab)
    store.close()


def report(db: Path, policy: PromotionSpec) -> CandidateReport:
    store = open_store(f"sqlite:///{db}")
    store.connect()
    try:
        return candidate_report(store, "m", "cand", "cpu", policy)
    finally:
        store.close()


POLICY = PromotionSpec(min_shadow_s=0, min_labelled=500, metric="auc", margin=0.01, max_p99_ms=50)


def test_a_better_candidate_passes_and_a_worse_one_fails_on_the_metric(tmp_path: Path) -> None:
    fill(tmp_path / "good.db", quality=2.0)
    good = report(tmp_path / "good.db", POLICY)
    assert good.labelled_pairs == 800 and good.logged == 800 and good.errors == 0
    assert good.metric.candidate > good.metric.live
    assert good.verdict.passed, good.verdict
    assert 0.0 <= good.agreement <= 1.0 and good.compared == 800
    fill(tmp_path / "bad.db", quality=0.2)
    bad = report(tmp_path / "bad.db", POLICY)
    assert bad.verdict.failing == ["non_inferiority"]


def test_each_rule_can_fail(tmp_path: Path) -> None:
    fill(tmp_path / "e.db", quality=2.0, error_every=10)
    r = report(tmp_path / "e.db", POLICY)
    assert r.errors == 80 and r.error_rate == pytest.approx(0.1)
    assert "max_error_rate" in r.verdict.failing
    strict = PromotionSpec(min_shadow_s=7 * 86400, min_labelled=5000, max_p99_ms=1.0)
    r = report(tmp_path / "e.db", strict)
    assert {"min_shadow_duration", "min_labelled_pairs", "max_p99_latency"} <= set(r.verdict.failing)
    # a week-old shadow passes the duration rule
    fill(tmp_path / "old.db", quality=2.0, age_s=8 * 86400)
    r = report(tmp_path / "old.db", PromotionSpec(min_labelled=100))
    assert r.verdict.passed, r.verdict
