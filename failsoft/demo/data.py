"""Generated data and small models for the demo, and the portfolio.toml that serves them."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from failsoft.demo.recs import SegmentPopular
from failsoft.monitor.profile import Column
from failsoft.monitor.profile import build as build_profile

# name, centre, spread, lower bound, upper bound: the churn features in plausible units
CHURN_FEATURES = [
    ("tenure_months", 30.0, 12.0, 0.0, 240.0),
    ("monthly_spend", 60.0, 20.0, 0.0, 1000.0),
    ("support_tickets", 2.0, 1.0, 0.0, 100.0),
    ("logins_last_30d", 12.0, 5.0, 0.0, 1000.0),
    ("discount_pct", 10.0, 4.0, 0.0, 100.0),
    ("late_payments", 1.0, 0.6, 0.0, 50.0),
    ("devices", 2.0, 0.7, 0.0, 50.0),
    ("plan_age_days", 300.0, 120.0, 0.0, 10000.0),
]
N_ITEMS, N_SEGMENTS = 200, 8


def churn_units() -> tuple[np.ndarray[Any, Any], ...]:
    """Centre, spread, lower and upper bound of each churn feature, as arrays."""
    return tuple(np.array([f[i] for f in CHURN_FEATURES]) for i in range(1, 5))


def churn_data(n: int = 4000) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    z, y = make_classification(
        n_samples=n,
        n_features=len(CHURN_FEATURES),
        n_informative=5,
        n_redundant=1,
        weights=[0.8, 0.2],
        random_state=7,
    )
    centre, spread, lo, hi = churn_units()
    return np.clip(centre + spread * z, lo, hi), y


def recs_events(n: int = 20000, seed: int = 3) -> list[tuple[int, int, str]]:
    rng = np.random.default_rng(seed)
    items = [f"item-{i:03d}" for i in range(N_ITEMS)]
    prefs = [rng.permutation(N_ITEMS) for _ in range(N_SEGMENTS)]
    ranks = np.minimum(rng.zipf(1.6, size=n) - 1, N_ITEMS - 1)
    segments = rng.integers(0, N_SEGMENTS, size=n)
    hours = rng.integers(0, 24, size=n)
    shift = hours // 6  # a little time-of-day taste
    return [
        (int(s), int(h), items[prefs[s][(r + k) % N_ITEMS]])
        for s, h, r, k in zip(segments, hours, ranks, shift, strict=True)
    ]


def churn_traffic(rng: np.random.Generator, n: int) -> np.ndarray[Any, Any]:
    """Rows as the demo's clients send them (each feature on its own, in plausible units)."""
    centre, spread, lo, hi = churn_units()
    return np.round(np.clip(rng.normal(centre, spread, (n, len(CHURN_FEATURES))), lo, hi), 3)


def profiles(data_dir: Path, heavy: Any) -> None:
    """Reference profiles from a good period of traffic: churn with its scores and the outcomes that
    followed (so its performance can be estimated before labels arrive), recs from its inputs."""
    rng = np.random.default_rng(11)
    x = churn_traffic(rng, 5000)
    scores = heavy.predict_proba(x)[:, 1]
    outcome = (rng.uniform(size=len(scores)) < scores).astype(np.float64)
    cols = {n: Column(n, "numeric", x[:, i]) for i, (n, *_) in enumerate(CHURN_FEATURES)}
    cols |= {"score": Column("score", "numeric", scores), "churned": Column("churned", "numeric", outcome)}
    names = [n for n, *_ in CHURN_FEATURES]
    build_profile(cols, names, score="score", target="churned", source="demo reference").save(
        data_dir / "profiles" / "churn.json"
    )
    recs = {
        "segment": Column("segment", "numeric", rng.integers(0, N_SEGMENTS, 5000).astype(np.float64)),
        "hour": Column("hour", "numeric", rng.integers(0, 24, 5000).astype(np.float64)),
    }
    build_profile(recs, ["segment", "hour"], source="demo reference").save(
        data_dir / "profiles" / "recs.json"
    )


def build(data_dir: Path, backend_url: str, audit_after_s: float = 1800.0) -> Path:
    """Train the demo models into ``data_dir`` and write its portfolio.toml; returns the file's path."""
    models = data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    x, y = churn_data()
    heavy = GradientBoostingClassifier(n_estimators=150, max_depth=3, random_state=0).fit(x, y)
    cheap = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x, y)
    joblib.dump(heavy, models / "churn_heavy.joblib")
    joblib.dump(cheap, models / "churn_cpu.joblib")
    profiles(data_dir, heavy)
    # the shadow candidate: a smaller boosted model, judged on delayed labels before anyone promotes it
    candidate = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=1).fit(x, y)
    joblib.dump(candidate, models / "churn_candidate.joblib")
    events = recs_events()
    joblib.dump(SegmentPopular(by_hour=True).fit(events), models / "recs_heavy.joblib")
    joblib.dump(SegmentPopular().fit(events), models / "recs_cpu.joblib")
    with (data_dir / "events.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["segment", "hour", "item"])
        w.writerows(events)
    base_rate = round(float(y.mean()), 3)
    churn_inputs = "\n".join(
        f'[[models.churn.inputs]]\nname = "{n}"\nmin = {lo}\nmax = {hi}\n'
        for n, _, _, lo, hi in CHURN_FEATURES
    )
    toml = f'''# The failsoft demo portfolio (generated by `failsoft demo`).
data_dir = "state"
trusted_model_dirs = ["models"]

# A person is asked to look when a model stays in fallback this long (short, for the demo).
[audit]
after_s = {audit_after_s}
window_s = 2.0

[models.churn]
version = "2026.11"
deadline_ms = 60

{churn_inputs}
[models.churn.output]
type = "float"
min = 0.0
max = 1.0

# Watched against a reference profile: estimated AUC before the labels, realized once they arrive.
[models.churn.monitor]
profile = "profiles/churn.json"
window_rows = 300
window_s = 5

[[models.churn.tiers]]
name = "gbm-remote"
kind = "oip"
url = "{backend_url}"
model_name = "churn"
timeout_ms = 30
max_concurrency = 2
breaker = {{ window = 20, min_calls = 8, failure_rate = 0.5, open_ms = 1000, half_open_probes = 2 }}

[[models.churn.tiers]]
name = "logreg-cpu"
kind = "python"
path = "models/churn_cpu.joblib"
timeout_ms = 10

[[models.churn.tiers]]
name = "base-rate"
kind = "default"
value = {base_rate}

# Gets a copy of every churn request on the serving engine; its answers are logged, never shown.
[[models.churn.candidates]]
name = "gbm-v2"
kind = "oip"
url = "{backend_url}"
model_name = "churn_v2"
timeout_ms = 50

[models.churn.promotion]
min_labelled = 100
metric = "auc"
margin = 0.02

[models.recs]
version = "2026.11"
deadline_ms = 60

[[models.recs.inputs]]
name = "segment"
type = "int"
min = 0
max = {N_SEGMENTS - 1}

[[models.recs.inputs]]
name = "hour"
type = "int"
min = 0
max = 23

[models.recs.output]
type = "list"
min_length = 1
max_length = 50

# Two drifted windows in a row quarantine recs (down its chain, reason "quarantined"); three clean
# windows bring it back.
[models.recs.monitor]
profile = "profiles/recs.json"
window_rows = 100
window_s = 5
quarantine_after = 2
min_span_s = 3                   # a short demo; in production drift must last a minute (the default)
recover_after = 3

[[models.recs.tiers]]
name = "hourly-remote"
kind = "oip"
url = "{backend_url}"
model_name = "recs"
timeout_ms = 30
max_concurrency = 2
breaker = {{ window = 20, min_calls = 8, failure_rate = 0.5, open_ms = 1000, half_open_probes = 2 }}

[[models.recs.tiers]]
name = "segment-cpu"
kind = "python"
path = "models/recs_cpu.joblib"
method = "predict"
timeout_ms = 15

[[models.recs.tiers]]
name = "top10"
kind = "default"
source = "events.csv"
item_column = "item"
top_n = 10
refresh_s = 10
'''
    path = data_dir / "portfolio.toml"
    path.write_text(toml)
    return path
