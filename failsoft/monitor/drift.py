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

from failsoft.config import DriftSpec
from failsoft.monitor.profile import (
    PREDICTION,
    Categorical,
    Column,
    Numeric,
    Profile,
    array_of,
    encode,
    sketch_bins,
)

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


def _psi_js(counts: Ints, ref: Array, valid: Any = None) -> tuple[Array, Array]:
    """PSI and Jensen-Shannon distance (base 2) per window, from bin counts (windows x bins) and the
    reference's shares (one row, or one per window); ``valid`` masks bins a row does not have."""
    ref = np.atleast_2d(ref)
    mask = np.ones(counts.shape, dtype=bool) if valid is None else np.atleast_2d(valid)
    width = mask.sum(axis=1, keepdims=True)
    n = counts.sum(axis=1, keepdims=True)
    q = (counts + _SMOOTH) / (n + _SMOOTH * width)
    p = np.where(mask, np.maximum(ref, 1e-6), 1.0)
    p = p / np.where(mask, p, 0.0).sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        psi = np.where(mask, (q - p) * np.log(q / p), 0.0).sum(axis=1)
        qe = counts / np.maximum(n, 1)
        r = ref / ref.sum(axis=1, keepdims=True)
        m = (qe + r) / 2
        kl_q = np.where(qe > 0, qe * np.log2(qe / m), 0.0).sum(axis=1)
        kl_p = np.where(r > 0, r * np.log2(r / m), 0.0).sum(axis=1)
    js = np.sqrt(np.maximum(0.5 * (kl_q + kl_p), 0.0))
    return psi, js


def ks_pvalue(d: Array, en: Array) -> Array:
    """Two-sample KS p-value for effective size en = n*m/(n+m): the Kolmogorov limit with Stephens'
    small-sample correction (a ufunc: thousands of windows at once, where the exact distribution costs
    milliseconds each)."""
    from scipy.special import kolmogorov  # scipy when a monitor judges: importing it costs a second

    root = np.sqrt(en)
    return np.asarray(kolmogorov((root + 0.12 + 0.11 / root) * d), dtype=np.float64)


_GROUP_CELLS = 1 << 22  # fine-bin counters per numpy pass (windows x features x bins): bounds memory
_GROUP_VALUES = 1 << 20  # values per numpy pass (features x rows): past this, memory bandwidth rules


def _numeric(refs: list[Numeric], values: list[Array], chunk: Ints, nc: int) -> list[dict[str, Array]]:
    """Every numeric feature's statistics for every window, in a few numpy passes over all of them at once
    (per feature, only the placement of its values in its sketch is its own)."""
    k = len(refs[0].sketch)
    if any(len(r.sketch) != k for r in refs):  # profiles from another sketch size: one at a time
        return [s for r, v in zip(refs, values, strict=True) for s in _numeric([r], [v], chunk, nc)]
    # few features per pass over many rows (temporaries are features x rows), many over few
    step = max(1, min(_GROUP_CELLS // (nc * (k + 1)), _GROUP_VALUES // max(len(chunk), 1)))
    if len(refs) > step:
        return [s for i in range(0, len(refs), step)
                for s in _numeric(refs[i : i + step], values[i : i + step], chunk, nc)]  # fmt: skip
    f = len(refs)
    cols = values[0][None, :] if f == 1 else np.stack(values)  # (features, rows)
    miss = np.isnan(cols)
    present = ~miss
    whole = not miss.any()

    def sel(a: Any) -> Any:  # the present values (all of them, without a copy, when none is missing)
        return a.ravel() if whole else a[present]

    # (feature, row) -> window x feature
    cell = chunk[None, :] if f == 1 else chunk[None, :] * f + np.arange(f)[:, None]
    # One window (the online monitor's): each feature's fine-bin counts from its values sorted, where
    # placing each value in the sketch (a binary search per value, in no order) costs several times more.
    one = nc == 1
    fine_bin = None if one else np.empty(cols.shape, dtype=np.int64)
    srt = np.sort(cols, axis=1) if one else None  # NaN sorts last
    fine = np.empty((1, f, k + 1), dtype=np.int64) if one else None
    counted = present.sum(axis=1) if one else None
    widest = max(len(r.proportions) for r in refs)
    props = np.zeros((f, widest))
    valid = np.zeros((f, widest), dtype=bool)
    ref_cdf = np.empty((f, k))
    out_of_range = np.zeros(cols.shape, dtype=bool)
    for i, r in enumerate(refs):
        if srt is not None and fine is not None and counted is not None:
            # values at or under each sketch point; a value's fine bin is the number of points below it
            at_or_under = np.searchsorted(srt[i], array_of(r.sketch), side="right")
            fine[0, i, 0] = at_or_under[0]
            fine[0, i, 1:k] = np.diff(at_or_under)
            fine[0, i, k] = counted[i] - at_or_under[-1]
        elif fine_bin is not None:
            fine_bin[i] = sketch_bins(r, cols[i])
        b = len(r.proportions)
        props[i, :b], valid[i, :b] = array_of(r.proportions), True
        ref_cdf[i] = array_of(r.cdf)
        out_of_range[i] = (cols[i] < r.min) | (cols[i] > r.max)
    cells = nc * f
    total = np.bincount(chunk, minlength=nc).astype(np.float64)
    missing = (
        np.zeros(cells, dtype=np.int64) if whole else np.bincount(cell[miss], minlength=cells)
    ).reshape(nc, f)
    if fine is None:
        assert fine_bin is not None
        fine = np.bincount(sel(cell * (k + 1) + fine_bin), minlength=cells * (k + 1)).reshape(nc, f, k + 1)
    n = fine.sum(axis=2)
    cdf = np.cumsum(fine[:, :, :k], axis=2) / np.maximum(n, 1)[:, :, None]
    ks = np.abs(cdf - ref_cdf[None]).max(axis=2)
    ref_n = np.array([r.n for r in refs], dtype=np.float64)
    en = np.maximum(np.round(n * ref_n / np.maximum(n + ref_n, 1)), 1)
    ks_p = ks_pvalue(ks, en)
    # PSI bins from the fine counts: bin j closes at sketch index edges[j]
    coarse = np.zeros((nc, f, widest), dtype=np.int64)
    for i, r in enumerate(refs):
        starts = [0, *(e + 1 for e in r.edges)]
        coarse[:, i, : len(starts)] = np.add.reduceat(fine[:, i, :], starts, axis=1)
    per_row = (nc, f, widest)
    psi, js = _psi_js(
        coarse.reshape(nc * f, widest),
        np.broadcast_to(props, per_row).reshape(-1, widest),
        np.broadcast_to(valid, per_row).reshape(-1, widest),
    )
    psi, js = psi.reshape(nc, f), js.reshape(nc, f)
    oor = np.bincount(cell[present & out_of_range], minlength=cells).reshape(nc, f)
    bins = valid.sum(axis=1).astype(np.float64)
    return [
        {
            "rows": total,
            "n": n[:, i].astype(np.float64),
            "psi": psi[:, i],
            "ks": ks[:, i],
            "ks_p": ks_p[:, i],
            "js": js[:, i],
            "missing": missing[:, i] / np.maximum(total, 1),
            "out_of_range": oor[:, i] / np.maximum(n[:, i], 1),
            "bins": np.full(nc, bins[i]),
            # each window's share per PSI bin (the reference's deciles), to draw against the reference
            CURRENT: coarse[:, i, : len(refs[i].proportions)] / np.maximum(n[:, i], 1)[:, None],
        }
        for i in range(f)
    ]


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
    from scipy.stats import chi2 as chi2_dist

    return stat, np.asarray(chi2_dist.sf(stat, dof), dtype=np.float64)


def _categorical(ref: Categorical, codes: Ints, chunk: Ints, nc: int) -> dict[str, Array]:
    k = len(ref.categories) + 1
    miss = codes < 0
    total = np.bincount(chunk, minlength=nc)
    missing = np.bincount(chunk[miss], minlength=nc)
    counts = np.bincount(chunk[~miss] * k + codes[~miss], minlength=nc * k).reshape(nc, k)
    n = counts.sum(axis=1)
    props = array_of(ref.proportions)
    psi, js = _psi_js(counts, props)
    stat, p = contingency(counts, props * ref.n)
    unseen = np.maximum(counts[:, -1] / np.maximum(n, 1) - props[-1], 0.0)
    return {
        "rows": total.astype(np.float64),
        "n": n.astype(np.float64),
        "psi": psi,
        "chi2": stat,
        "chi2_p": p,
        "js": js,
        "missing": missing / np.maximum(total, 1),
        "unseen": unseen,
        "bins": np.full(nc, float((props > 0).sum())),
        CURRENT: counts / np.maximum(n, 1)[:, None],
    }


def _stats(refs: dict[str, Numeric | Categorical], columns: dict[str, Column], chunk: Ints, nc: int
           ) -> dict[str, dict[str, Array]]:  # fmt: skip
    out: dict[str, dict[str, Array]] = {}
    numeric = [n for n, r in refs.items() if isinstance(r, Numeric)]
    if numeric:
        values = [columns[n].values if columns[n].kind == "numeric" else _as_float(columns[n].values)
                  for n in numeric]  # fmt: skip
        for name, st in zip(
            numeric,
            _numeric([r for n in numeric if isinstance(r := refs[n], Numeric)], values, chunk, nc),
            strict=True,
        ):
            out[name] = st
    for name, ref in refs.items():
        if isinstance(ref, Categorical):
            col = columns[name]
            codes = encode(ref, col.values if col.kind == "categorical" else _as_text(col.values))
            out[name] = _categorical(ref, codes, chunk, nc)
    return {name: out[name] for name in refs}


def _as_float(values: Any) -> Array:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v)
    return out


def _as_text(values: Any) -> Any:
    return np.array([None if v != v else str(v) for v in values], dtype=object)


_P_TESTS = {"psi": "psi_p", "ks": "ks_p", "chi2": "chi2_p"}
CURRENT = "current"  # a window's shares per bin: drawn, never a statistic


def _psi_tests(refs: dict[str, Any], stats: dict[str, dict[str, Array]], level: float) -> None:
    """PSI's p-value and its critical value at ``level`` (Bonferroni's, the first step of Holm's), for
    every feature and window in one scipy call each: with no drift PSI ~ (1/n + 1/m) chi2(B - 1)."""
    if not stats:
        return
    from scipy.stats import chi2 as chi2_dist

    names = list(stats)
    scale = np.concatenate([1 / np.maximum(stats[n]["n"], 1) + 1 / refs[n].n for n in names])
    dof = np.concatenate([np.maximum(stats[n]["bins"] - 1, 1) for n in names])
    psi = np.concatenate([stats[n]["psi"] for n in names])
    p = np.asarray(chi2_dist.sf(psi / scale, dof), dtype=np.float64)
    critical = scale * np.asarray(chi2_dist.ppf(1 - level, dof), dtype=np.float64)
    start = 0
    for n in names:
        end = start + len(stats[n]["psi"])
        stats[n]["psi_p"], stats[n]["psi_critical"] = p[start:end], critical[start:end]
        start = end


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
    stats = _stats(refs, columns, chunk, n_chunks)
    # every feature has PSI; KS only the numeric ones, chi-square only the categorical ones
    keys = [(name, t) for name in refs for t in spec.tests if t == "psi" or _P_TESTS[t] in stats[name]]
    _psi_tests(refs, stats, spec.alpha / max(len(keys), 1))
    if keys:
        pvals = np.stack([stats[name][_P_TESTS[t]] for name, t in keys], axis=1)
        adjusted = holm(pvals)
    else:
        adjusted = np.empty((n_chunks, 0))
    rows = np.bincount(chunk, minlength=n_chunks)
    reports = []
    for w in range(n_chunks):
        features: dict[str, dict[str, Any]] = {}
        drifted, quality = [], []
        small = bool(rows[w] < spec.min_rows)
        for name, ref in refs.items():
            s: dict[str, Any] = {k: float(v[w]) for k, v in stats[name].items() if k != CURRENT}
            s["distribution"] = {
                "reference": [round(float(x), 5) for x in ref.proportions],
                "current": [round(float(x), 5) for x in stats[name][CURRENT][w]],
            }
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
