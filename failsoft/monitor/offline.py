"""The monitor's statistics over files, chunk by chunk, so a team can backtest its thresholds on history:
``failsoft profile``, ``failsoft drift`` and ``failsoft estimate``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from failsoft.config import DriftSpec, PortfolioSpec
from failsoft.monitor import drift
from failsoft.monitor.performance import estimate, fit_calibration, realized
from failsoft.monitor.profile import PREDICTION, Column, Profile, ProfileError, build, read_table
from failsoft.terminal import step


def model_features(spec: PortfolioSpec, model: str) -> list[str]:
    m = spec.models.get(model)
    if m is None:
        raise ProfileError(f"{spec.file}: no model {model!r} (it has: {', '.join(spec.models)})")
    return [f.name for f in m.inputs]


async def predict_with(spec: PortfolioSpec, model: str, columns: dict[str, Column]) -> Column:
    """The model's predictions for every row, from its first in-process tier (the predictions a profile
    describes when the data has no prediction column)."""
    from failsoft.config import PythonTierSpec
    from failsoft.tiers import PythonBackend
    from failsoft.validation import Batch

    m = spec.models[model]
    for i, t in enumerate(m.tiers):
        if isinstance(t, PythonTierSpec):
            backend = PythonBackend(t, tuple(m.inputs), spec.resolve, spec.file, f"models.{model}.tiers[{i}]")
            break
    else:
        raise ProfileError(
            f"{model} has no in-process tier to compute predictions with; pass --prediction-column"
        )
    await backend.start()
    try:
        names = tuple(f.name for f in m.inputs)
        n = len(columns[names[0]].values)
        values = [columns[name].values for name in names]
        rows = [{name: _plain(v[i]) for name, v in zip(names, values, strict=True)} for i in range(n)]
        out: list[Any] = []
        for start in range(0, n, 10_000):
            out += backend.predict_inline(Batch(names, rows[start : start + 10_000]))
    finally:
        await backend.close()
    if out and isinstance(out[0], str | bool):
        return Column(PREDICTION, "categorical", np.array([str(v) for v in out], dtype=object))
    return Column(PREDICTION, "numeric", np.asarray(out, dtype=np.float64))


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def profile_file(
    data: str | Path,
    features: Sequence[str] | None,
    prediction: str | None = None,
    score: str | None = None,
    target: str | None = None,
    threshold: float = 0.5,
    computed: Column | None = None,
) -> Profile:
    step(f"reading {Path(data).name}")
    columns = read_table(data)
    step("building the profile")
    named = {c for c in (prediction, score, target) if c}
    if computed is not None:
        columns[PREDICTION] = computed
        prediction = PREDICTION
    chosen = list(features) if features else [c for c in columns if c not in named and c != "id"]
    return build(columns, chosen, prediction, score, target, threshold, source=str(data))


def drift_file(
    profile: Profile,
    data: str | Path,
    chunk_size: int,
    spec: DriftSpec,
    prediction: str | None = None,
) -> dict[str, Any]:
    """One report per chunk of ``chunk_size`` rows of ``data`` (in file order)."""
    wanted = list(profile.features)
    if prediction:
        wanted.append(prediction)
    step(f"reading {Path(data).name}")
    columns = read_table(data)
    step("testing chunk by chunk")
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ProfileError(f"{data}: no column {', '.join(missing)} (the profile describes it)")
    cols = {c: columns[c] for c in profile.features}
    if prediction:
        cols[PREDICTION] = columns[prediction]
    n = len(cols[wanted[0]].values) if wanted else 0
    chunk, nc = drift.chunks(n, chunk_size)
    reports = drift.evaluate(profile, cols, chunk, nc, spec)
    for i, r in enumerate(reports):
        r["chunk"], r["start"], r["end"] = i, i * chunk_size, min((i + 1) * chunk_size, n)
    return {
        "rows": n,
        "chunk_size": chunk_size,
        "chunks": reports,
        "drifted_chunks": sum(r["verdict"] == "drift" for r in reports),
    }


def _targets(
    analysis: dict[str, Column], target: str, targets: str | Path | None, id_column: str
) -> np.ndarray | None:
    if target in analysis:
        return np.asarray(analysis[target].values, dtype=np.float64)
    if targets is None:
        return None
    tcols = read_table(targets, [id_column, target])
    if id_column not in analysis:
        raise ProfileError(f"no column {id_column} in the analysis data to join the targets on")
    ids, ys = _keys(tcols[id_column]), np.asarray(tcols[target].values, dtype=np.float64)
    order = np.argsort(ids, kind="stable")
    ids, ys = ids[order], ys[order]
    want = _keys(analysis[id_column])
    pos = np.clip(np.searchsorted(ids, want), 0, max(len(ids) - 1, 0))
    found = ids[pos] == want if len(ids) else np.zeros(len(want), dtype=bool)
    return np.where(found, ys[pos] if len(ids) else np.nan, np.nan)


def _keys(col: Column) -> np.ndarray:
    """Join keys comparable across files: request ids are strings, and a CSV may read them as numbers."""
    if col.kind == "numeric":
        values = np.asarray(col.values, dtype=np.float64).tolist()
        return np.array(["" if v != v else str(int(v)) if v.is_integer() else repr(v) for v in values])
    return np.array(["" if v is None else str(v) for v in col.values])


def estimate_file(
    reference: str | Path,
    analysis: str | Path,
    score: str,
    target: str,
    prediction: str | None = None,
    chunk_size: int = 5000,
    threshold: float = 0.5,
    targets: str | Path | None = None,
    id_column: str = "id",
    max_drop: float = 0.02,
) -> dict[str, Any]:
    """Estimated (and, where targets are known, realized) ROC AUC, accuracy and F1 per analysis chunk; a
    chunk is flagged when its estimated ROC AUC falls more than ``max_drop`` below the reference's."""
    step(f"reading {Path(reference).name}")
    ref = read_table(reference, [c for c in (score, target, prediction) if c])
    y, s = np.asarray(ref[target].values, dtype=np.float64), np.asarray(ref[score].values, dtype=np.float64)
    keep = ~(np.isnan(y) | np.isnan(s))
    calibration = fit_calibration(y[keep], s[keep], threshold)
    base = realized("binary", y[keep], s[keep], threshold)
    step(f"reading {Path(analysis).name}")
    ana = read_table(analysis)
    for c in [score, prediction]:
        if c and c not in ana:
            raise ProfileError(f"{analysis}: no column {c}")
    scores = np.asarray(ana[score].values, dtype=np.float64)
    predicted = np.asarray(ana[prediction].values, dtype=np.float64) if prediction else None
    step("joining late labels" if targets else "estimating")
    truth = _targets(ana, target, targets, id_column)
    step("estimating chunk by chunk")
    n = len(scores)
    chunks = []
    for i, start in enumerate(range(0, n, chunk_size)):
        sl = slice(start, min(start + chunk_size, n))
        est = estimate(calibration, scores[sl], None if predicted is None else predicted[sl])
        row: dict[str, Any] = {"chunk": i, "start": sl.start, "end": sl.stop, "rows": sl.stop - sl.start}
        row["estimated"] = est
        row["realized"] = None
        if truth is not None:
            t = truth[sl]
            known = ~np.isnan(t)
            row["labelled"] = int(known.sum())
            if known.sum() >= 2:
                row["realized"] = realized("binary", t[known], scores[sl][known], threshold)
        drop = base["roc_auc"] - est.get("roc_auc", math.nan)
        row["verdict"] = "degraded" if drop > max_drop else "ok"
        chunks.append(row)
    return {
        "reference": base,
        "calibrated": bool(calibration.x),
        "chunk_size": chunk_size,
        "max_drop": max_drop,
        "chunks": chunks,
        "degraded_chunks": sum(c["verdict"] == "degraded" for c in chunks),
    }
