"""Drift and data quality of windows of rows against a reference profile, many windows at once.

Every statistic is computed for all windows (the online monitor's one window, or the chunks of an offline
file) in one pass of numpy per column: each value is placed once in its feature's fine bins (the profile's
quantile sketch), and everything else is arithmetic on the per-window bin counts.

- **PSI** over the reference deciles, with its sample-size-aware p-value: with no drift, PSI is about
  (1/n + 1/m) times a chi-square with B-1 degrees of freedom (n rows in the window, m in the reference),
  so the textbook 0.1 / 0.25 cut-offs fire on most small windows; the critical value shown is that
  distribution's quantile at the corrected level.
- **KS** (numeric): the largest gap between the window's CDF and the reference's, exact to 1/SKETCH; the
  p-value is the Kolmogorov limit for (n, m) with Stephens' small-sample correction.
- **Chi-square** (categorical): the 2 x K contingency test of window against reference counts.
- **Jensen-Shannon distance** (base 2) over the same bins, an effect size in [0, 1].
- **Holm's correction** over every p-value of the window (features x tests, and the predictions).
- Data quality: missing share over the reference's, out-of-range share, unseen categories.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.special import kolmogorov
from scipy.stats import chi2 as chi2_dist

from failsoft.config import DriftSpec
from failsoft.monitor.profile import PREDICTION, Categorical, Column, Numeric, Profile, encode, sketch_bins

Array = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

_SMOOTH = 0.5  # added to each window bin count (and its reference share) before PSI and JS


def holm(p: Array) -> Array:
    """Holm-Bonferroni adjusted p-values along the last axis (NaN: no test, left out)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    flat_p, flat_out = p.reshape(-1, p.shape[-1]), out.reshape(-1, p.shape[-1])
    for row, dst in zip(flat_p, flat_out, strict=True):
        idx = np.flatnonzero(~np.isnan(row))
        m = len(idx)
        if m == 0:
            continue
        order = idx[np.argsort(row[idx], kind="stable")]
        adj = np.maximum.accumulate(row[order] * (m - np.arange(m)))
        dst[order] = np.minimum(adj, 1.0)
    return out


def _psi_js(counts: Ints, ref: Array) -> tuple[Array, Array]:
    """PSI and Jensen-Shannon distance (base 2) per window, from bin counts (windows x bins)."""
    n = counts.sum(axis=1, keepdims=True)
    q = (counts + _SMOOTH) / (n + _SMOOTH * counts.shape[1])
    p = np.maximum(ref, 1e-6)[None, :]
    p = p / p.sum()
    psi = ((q - p) * np.log(q / p)).sum(axis=1)
    qe = counts / np.maximum(n, 1)
    r = (ref / ref.sum())[None, :]
    m = (qe + r) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_q = np.where(qe > 0, qe * np.log2(qe / m), 0.0).sum(axis=1)
        kl_p = np.where(r > 0, r * np.log2(r / m), 0.0).sum(axis=1)
    js = np.sqrt(np.maximum(0.5 * (kl_q + kl_p), 0.0))
    return psi, js


def _psi_p(psi: Array, n: Array, m: int, bins: int) -> Array:
    scale = 1.0 / np.maximum(n, 1) + 1.0 / m
    return np.asarray(chi2_dist.sf(psi / scale, max(bins - 1, 1)), dtype=np.float64)


def ks_pvalue(d: Array, en: Array) -> Array:
    """Two-sample KS p-value for effective size en = n*m/(n+m): the Kolmogorov limit with Stephens'
    small-sample correction (a ufunc: thousands of windows at once, where the exact distribution costs
    milliseconds each)."""
    root = np.sqrt(en)
    return np.asarray(kolmogorov((root + 0.12 + 0.11 / root) * d), dtype=np.float64)


def _numeric(ref: Numeric, values: Array, chunk: Ints, nc: int) -> dict[str, Array]:
    k = len(ref.sketch)
    miss = np.isnan(values)
    total = np.bincount(chunk, minlength=nc)
    missing = np.bincount(chunk[miss], minlength=nc)
    v, c = values[~miss], chunk[~miss]
    fine = np.bincount(c * (k + 1) + sketch_bins(ref, v), minlength=nc * (k + 1)).reshape(nc, k + 1)
    n = fine.sum(axis=1)
    cdf = np.cumsum(fine[:, :k], axis=1) / np.maximum(n, 1)[:, None]
    ks = np.abs(cdf - np.asarray(ref.cdf)[None, :]).max(axis=1)
    en = np.maximum(np.round(n * ref.n / np.maximum(n + ref.n, 1)), 1)
    coarse = np.add.reduceat(fine, [0, *(e + 1 for e in ref.edges)], axis=1)
    props = np.asarray(ref.proportions)
    psi, js = _psi_js(coarse, props)
    out_of_range = np.bincount(c[(v < ref.min) | (v > ref.max)], minlength=nc)
    return {
        "rows": total.astype(np.float64),
        "n": n.astype(np.float64),
        "psi": psi,
        "psi_p": _psi_p(psi, n, ref.n, len(props)),
        "ks": ks,
        "ks_p": ks_pvalue(ks, en),
        "js": js,
        "missing": missing / np.maximum(total, 1),
        "out_of_range": out_of_range / np.maximum(n, 1),
        "bins": np.full(nc, float(len(props))),
    }


def contingency(window: Ints, ref_counts: Array) -> tuple[Array, Array]:
    """Pearson's chi-square of each window's counts against the reference counts (a 2 x K table per
    window, no continuity correction) and its p-value; categories empty in both are left out."""
    n = window.sum(axis=1, keepdims=True).astype(np.float64)
    r = ref_counts[None, :]
    m = r.sum()
    col = window + r
    with np.errstate(divide="ignore", invalid="ignore"):
        ew, er = n * col / (n + m), m * col / (n + m)
        terms = np.where(col > 0, (window - ew) ** 2 / ew + (r - er) ** 2 / er, 0.0)
    stat = terms.sum(axis=1)
    dof = np.maximum((col > 0).sum(axis=1) - 1, 1)
    return stat, np.asarray(chi2_dist.sf(stat, dof), dtype=np.float64)


def _categorical(ref: Categorical, codes: Ints, chunk: Ints, nc: int) -> dict[str, Array]:
    k = len(ref.categories) + 1
    miss = codes < 0
    total = np.bincount(chunk, minlength=nc)
    missing = np.bincount(chunk[miss], minlength=nc)
    counts = np.bincount(chunk[~miss] * k + codes[~miss], minlength=nc * k).reshape(nc, k)
    n = counts.sum(axis=1)
    props = np.asarray(ref.proportions)
    psi, js = _psi_js(counts, props)
    stat, p = contingency(counts, props * ref.n)
    unseen = np.maximum(counts[:, -1] / np.maximum(n, 1) - props[-1], 0.0)
    return {
        "rows": total.astype(np.float64),
        "n": n.astype(np.float64),
        "psi": psi,
        "psi_p": _psi_p(psi, n, ref.n, int((props > 0).sum())),
        "chi2": stat,
        "chi2_p": p,
        "js": js,
        "missing": missing / np.maximum(total, 1),
        "unseen": unseen,
        "bins": np.full(nc, float((props > 0).sum())),
    }


def _stats(ref: Numeric | Categorical, col: Column, chunk: Ints, nc: int) -> dict[str, Array]:
    if isinstance(ref, Numeric):
        values = col.values if col.kind == "numeric" else _as_float(col.values)
        return _numeric(ref, values, chunk, nc)
    codes = encode(ref, col.values if col.kind == "categorical" else _as_text(col.values))
    return _categorical(ref, codes, chunk, nc)


def _as_float(values: Any) -> Array:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v)
    return out


def _as_text(values: Any) -> Any:
    return np.array([None if v != v else str(v) for v in values], dtype=object)


_P_TESTS = {"psi": "psi_p", "ks": "ks_p", "chi2": "chi2_p"}


def evaluate(
    profile: Profile,
    columns: dict[str, Column],
    chunk: Ints,
    n_chunks: int,
    spec: DriftSpec,
    invalid: Ints | None = None,
) -> list[dict[str, Any]]:
    """One report per window: per feature (and ``prediction``) every statistic, its corrected p-values and
    verdict; the window's verdict: ``drift``, ``quality``, ``ok`` or ``too_small``. ``chunk`` gives each
    row's window (0..n_chunks-1); ``invalid`` counts rejected requests per window."""
    names = [n for n in profile.features if n in columns]
    refs: dict[str, Numeric | Categorical] = {n: profile.features[n] for n in names}
    if spec.prediction and profile.prediction is not None and PREDICTION in columns:
        refs[PREDICTION] = profile.prediction
    stats = {name: _stats(ref, columns[name], chunk, n_chunks) for name, ref in refs.items()}
    keys = [(name, t) for name in refs for t in spec.tests if _P_TESTS[t] in stats[name]]
    if keys:
        pvals = np.stack([stats[name][_P_TESTS[t]] for name, t in keys], axis=1)
        adjusted = holm(pvals)
    else:
        adjusted = np.empty((n_chunks, 0))
    rows = np.bincount(chunk, minlength=n_chunks)
    level = spec.alpha / max(len(keys), 1)
    for name, ref in refs.items():
        st = stats[name]
        dof = np.maximum(st["bins"] - 1, 1)
        st["psi_critical"] = (1 / np.maximum(st["n"], 1) + 1 / ref.n) * chi2_dist.ppf(1 - level, dof)
    reports = []
    for w in range(n_chunks):
        features: dict[str, dict[str, Any]] = {}
        drifted, quality = [], []
        small = bool(rows[w] < spec.min_rows)
        for name, ref in refs.items():
            s: dict[str, Any] = {k: float(v[w]) for k, v in stats[name].items()}
            adj = {t: float(adjusted[w, i]) for i, (fn, t) in enumerate(keys) if fn == name}
            s["p_adjusted"] = adj
            problems = []
            # a prediction is "missing" where another tier answered: that is the chain's business
            if name != PREDICTION and s["missing"] - ref.missing > spec.max_missing:
                problems.append("missing")
            if s.get("out_of_range", 0.0) > spec.max_out_of_range:
                problems.append("out_of_range")
            if s.get("unseen", 0.0) > spec.max_unseen:
                problems.append("unseen")
            significant = [t for t, p in adj.items() if p < spec.alpha]
            drift = bool(significant and s["psi"] >= spec.min_psi and not small and s["n"] > 0)
            s["drift"] = drift
            s["significant"] = significant
            s["quality"] = problems
            if drift:
                drifted.append(name)
            if problems and not small:
                quality += [f"{name}:{p}" for p in problems]
            features[name] = s
        invalid_share = float(invalid[w] / max(rows[w] + invalid[w], 1)) if invalid is not None else 0.0
        if invalid_share > spec.max_invalid and not small:
            quality.append("invalid_input")
        verdict = "too_small" if small else "drift" if drifted else "quality" if quality else "ok"
        reports.append(
            {
                "rows": int(rows[w]),
                "verdict": verdict,
                "drifted": drifted,
                "quality": quality,
                "invalid_share": invalid_share,
                "tests": len(keys),
                "features": features,
            }
        )
    return reports


def chunks(n_rows: int, size: int) -> tuple[Ints, int]:
    """Each row's chunk for consecutive chunks of ``size`` rows (the last may be smaller)."""
    return np.arange(n_rows, dtype=np.int64) // size, max(-(-n_rows // size), 1)
