"""Realized performance against scikit-learn, and the calibration that estimated performance rests on."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    roc_auc_score,
)

from failsoft.monitor.performance import estimate, fit_calibration, realized


def test_binary_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    s = rng.uniform(size=2000)
    y = (rng.uniform(size=2000) < s).astype(float)
    r = realized("binary", y, s)
    assert r["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert r["accuracy"] == pytest.approx(accuracy_score(y, s >= 0.5))
    assert r["f1"] == pytest.approx(f1_score(y, s >= 0.5))
    assert r["log_loss"] == pytest.approx(log_loss(y, s))


def test_regression_multiclass_and_ranking() -> None:
    rng = np.random.default_rng(1)
    y, p = rng.normal(size=500), rng.normal(size=500)
    r = realized("regression", y, p)
    assert r["mae"] == pytest.approx(mean_absolute_error(y, p))
    assert r["rmse"] == pytest.approx(mean_squared_error(y, p) ** 0.5)
    labels = rng.choice(["a", "b", "c"], 300)
    preds = np.where(rng.uniform(size=300) < 0.7, labels, rng.choice(["a", "b", "c"], 300))
    r = realized("multiclass", labels, preds)
    assert r["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert r["f1_macro"] == pytest.approx(f1_score(labels, preds, average="macro"))
    served = [["i1", "i2", "i3"], ["i4", "i5"], ["i6"], ["i7", "i8", "i9"]]
    taken = ["i2", "i9", "i6", "i9"]
    assert realized("ranking", taken, served, k=2) == {"hit_rate@2": 0.5}  # i2 and i6 within the first 2


def test_calibration_is_kept_only_where_it_helps() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(size=20_000)
    y = (rng.uniform(size=20_000) < p).astype(float)
    assert fit_calibration(y, p).x == []  # already calibrated: left alone
    squashed = p**3  # over-confident in the negatives: isotonic regression fixes it
    cal = fit_calibration(y, squashed)
    assert cal.x
    assert np.abs(cal.apply(squashed) - p).mean() < 0.03
    est = estimate(cal, squashed[:5000])
    assert est["roc_auc"] == pytest.approx(roc_auc_score(y[:5000], squashed[:5000]), abs=0.02)
    assert est["accuracy"] == pytest.approx(accuracy_score(y[:5000], squashed[:5000] >= 0.5), abs=0.02)
