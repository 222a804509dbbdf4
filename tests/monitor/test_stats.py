"""The drift statistics against independent implementations (scipy), and their behaviour under no drift
(false alarms) and under a clear shift (caught within a few windows)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from failsoft.config import DriftSpec
from failsoft.monitor import drift
from failsoft.monitor.profile import SKETCH, Column, Profile, build

FEATURES = [*(f"x{i}" for i in range(8)), "visits", "plan"]


def sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, Column]:
    cols = {
        f"x{i}": Column(f"x{i}", "numeric", rng.normal(shift if i == 0 else 0.0, 1.0, n)) for i in range(8)
    }
    cols["visits"] = Column("visits", "numeric", rng.poisson(3, n).astype(float))
    plans = rng.choice(["free", "pro", "team", "enterprise"], n, p=[0.4, 0.3, 0.2, 0.1])
    cols["plan"] = Column("plan", "categorical", np.asarray(plans, dtype=object))
    cols["prediction"] = Column("prediction", "numeric", rng.beta(2, 5, n))
    return cols


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, Column], Profile]:
    cols = sample(np.random.default_rng(0), 20_000)
    return cols, build(cols, FEATURES, prediction="prediction")


def windows(cols: dict[str, Column], size: int, profile: Profile, spec: DriftSpec) -> list[dict]:
    n = len(cols["x0"].values)
    chunk, nc = drift.chunks(n, size)
    return drift.evaluate(profile, cols, chunk, nc, spec)


@pytest.mark.parametrize("feature", ["x1", "visits"])
def test_ks_matches_scipy(reference: tuple[dict[str, Column], Profile], feature: str) -> None:
    ref_cols, profile = reference
    rng = np.random.default_rng(1)
    for shift in [0.0, 0.05, 0.3]:
        cols = sample(rng, 500 * 4, shift)
        if feature == "x1":
            cols["x1"] = Column("x1", "numeric", cols["x1"].values + shift)
        else:
            cols["visits"] = Column("visits", "numeric", rng.poisson(3 + shift, 2000).astype(float))
        reports = windows(cols, 500, profile, DriftSpec())
        for i, r in enumerate(reports):
            window = cols[feature].values[i * 500 : (i + 1) * 500]
            oracle = ks_2samp(window, ref_cols[feature].values, method="asymp")
            ours = r["features"][feature]
            # the reference is kept as a quantile sketch: exact to one sketch step
            assert abs(ours["ks"] - oracle.statistic) <= 1.0 / SKETCH + 1e-9
            # Kolmogorov's limit with Stephens' correction against scipy's distribution for round(en):
            # close where it matters (small p), loose where both say "no drift"
            tolerance = 0.01 if oracle.pvalue < 0.1 else 0.05
            assert abs(ours["ks_p"] - oracle.pvalue) < tolerance, (ours["ks_p"], oracle.pvalue)


def test_chi_square_and_js_match_scipy(reference: tuple[dict[str, Column], Profile]) -> None:
    _, profile = reference
    ref = profile.features["plan"]
    rng = np.random.default_rng(2)
    for p in [[0.4, 0.3, 0.2, 0.1], [0.3, 0.3, 0.3, 0.1], [0.25, 0.25, 0.25, 0.25]]:
        plans = rng.choice(ref.categories, 800, p=p)
        cols = sample(rng, 800)
        cols["plan"] = Column("plan", "categorical", np.asarray(plans, dtype=object))
        ours = windows(cols, 800, profile, DriftSpec())[0]["features"]["plan"]
        counts = np.array([(plans == c).sum() for c in ref.categories])
        ref_counts = np.asarray(ref.proportions[:-1]) * ref.n
        stat, pvalue, _, _ = chi2_contingency(np.vstack([counts, ref_counts]), correction=False)
        assert ours["chi2"] == pytest.approx(stat, rel=1e-9)
        assert ours["chi2_p"] == pytest.approx(pvalue, rel=1e-6, abs=1e-12)
        js = jensenshannon(counts / counts.sum(), ref_counts / ref_counts.sum(), base=2)
        assert ours["js"] == pytest.approx(js, abs=1e-9)


def test_holm_matches_its_definition() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, rng.integers(1, 30))
        m = len(p)
        order = np.argsort(p)
        expected = np.empty(m)
        running = 0.0
        for rank, i in enumerate(order):
            running = max(running, min(1.0, (m - rank) * p[i]))
            expected[i] = running
        assert np.allclose(drift.holm(p[None, :])[0], expected)


def test_psi_p_value_is_calibrated_under_no_drift(reference: tuple[dict[str, Column], Profile]) -> None:
    """With no drift, PSI is about (1/n + 1/m) chi2(B-1): its p-value rejects about 5% at 0.05, while the
    textbook PSI > 0.1 cut-off fires on a large share of 100-row windows."""
    _, profile = reference
    reports = windows(sample(np.random.default_rng(4), 100 * 2000), 100, profile, DriftSpec())
    p = np.array([r["features"]["x1"]["psi_p"] for r in reports])
    psi = np.array([r["features"]["x1"]["psi"] for r in reports])
    assert 0.02 < (p < 0.05).mean() < 0.08
    assert (psi > 0.1).mean() > 0.2


def test_windows_from_the_reference_raise_no_alarm(reference: tuple[dict[str, Column], Profile]) -> None:
    """10 features and the predictions, 3 tests each, 100 requests a window: Holm's correction keeps the
    false alarms far under 5%."""
    _, profile = reference
    reports = windows(sample(np.random.default_rng(5), 100 * 1000), 100, profile, DriftSpec())
    alarms = sum(r["verdict"] != "ok" for r in reports)
    assert alarms / len(reports) <= 0.05, alarms
    assert reports[0]["tests"] == 9 * 2 + 2 + 2  # psi+ks per numeric, psi+chi2 per category, predictions


def test_a_clear_shift_is_caught_within_a_few_windows(reference: tuple[dict[str, Column], Profile]) -> None:
    _, profile = reference
    reports = windows(sample(np.random.default_rng(6), 100 * 3, shift=1.0), 100, profile, DriftSpec())
    assert [r["verdict"] for r in reports] == ["drift"] * 3
    assert all(r["drifted"] == ["x0"] for r in reports)
    assert all(r["features"]["x0"]["psi"] > r["features"]["x0"]["psi_critical"] for r in reports)


def test_data_quality(reference: tuple[dict[str, Column], Profile]) -> None:
    _, profile = reference
    rng = np.random.default_rng(7)
    cols = sample(rng, 400)
    x2 = cols["x2"].values.copy()
    x2[:60] = np.nan  # 15% missing, the reference had none
    x3 = cols["x3"].values.copy()
    x3[:40] = 1e6  # 10% out of the reference's range
    plans = cols["plan"].values.copy()
    plans[:40] = "student"  # never seen
    cols |= {"x2": Column("x2", "numeric", x2), "x3": Column("x3", "numeric", x3),
             "plan": Column("plan", "categorical", plans)}  # fmt: skip
    r = windows(cols, 400, profile, DriftSpec())[0]
    assert {"x2:missing", "x3:out_of_range", "plan:unseen"} <= set(r["quality"])
    assert r["features"]["x2"]["missing"] == pytest.approx(0.15)
    assert r["features"]["plan"]["unseen"] == pytest.approx(0.1)


def test_one_window_counts_equal_the_many_window_path() -> None:
    """The online monitor's one window takes a shortcut (its values sorted, not each placed in the sketch):
    every statistic equals what the general path gives the same rows (missing and out-of-range included)."""
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(20000, 5))
    ref[::17, 2] = np.nan
    names = [f"f{i}" for i in range(5)]
    prof = build({n: Column(n, "numeric", ref[:, i]) for i, n in enumerate(names)}, names)
    window = rng.normal(0.1, 1.1, size=(3000, 5))
    window[::13, 1] = np.nan
    window[5, 0] = 99.0
    refs = [prof.features[n] for n in names]
    values = [np.ascontiguousarray(window[:, i]) for i in range(5)]
    chunk = np.zeros(3000, dtype=np.int64)
    one, general = drift._numeric(refs, values, chunk, 1), drift._numeric(refs, values, chunk, 2)
    for a, b in zip(one, general, strict=True):
        for key in a:
            assert np.allclose(np.asarray(a[key])[0], np.asarray(b[key])[0], equal_nan=True), key
