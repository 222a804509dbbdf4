"""The leakage audit: for every feature, would a model have seen this value at prediction time?

Per feature it measures the feature latency (``available_at - event_time``: p50, p95, max); the share of
spine rows where a join on ``event_time`` alone would have used a value that had not landed yet and that
differs from what was really there (the would-leak rate); and the single-feature predictive power
(ROC AUC, folded to >= 0.5) of the value and of its null indicator on the label, in the naive join and in
the point-in-time one. Nulls are scored too: a Null that only appears after the outcome is the classic
leak, and checks that drop Nulls first never see it. One verdict per feature, with a reason.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from failsoft.durations import format_duration
from failsoft.errors import ConfigError
from failsoft.features.point_in_time import build_training_set
from failsoft.features.store import FeatureStore, connect, lag_quantiles, register
from failsoft.terminal import step

LEAK_RATE = 0.01  # a share of rows with not-yet-available values worth talking about
POWER_GAIN = 0.10  # how much more predictive the naive join must be to call it a leak
NEAR_PERFECT = 0.95
# ok; late: lands after its event, harmless point-in-time; suspicious: evidence of leakage without proof
# (near-perfect power on its own); leak: the naive join's extra power comes from values not yet landed
VERDICTS = ("ok", "late", "suspicious", "leak")


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


@dataclass
class FeatureVerdict:
    table: str
    feature: str
    verdict: str  # one of VERDICTS
    reason: str
    latency_s: dict[str, float | None]
    would_leak_rate: float
    power: dict[str, float | None] = field(default_factory=dict)


def _power(values: list[Any], labels: np.ndarray[Any, Any]) -> tuple[float | None, float | None]:
    """(AUC of the value where present, AUC of its null indicator), each folded to >= 0.5."""
    from sklearn.metrics import roc_auc_score

    def folded(score: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float | None:
        if len(np.unique(y)) < 2 or len(np.unique(score)) < 2:
            return None
        auc = float(roc_auc_score(y, score))
        return round(max(auc, 1.0 - auc), 4)

    null = np.array([v is None for v in values], dtype=float)
    present = ~null.astype(bool)
    value_auc = None
    if present.any():
        try:
            numeric = np.array([v for v in values if v is not None], dtype=float)
            value_auc = folded(numeric, labels[present])
        except (TypeError, ValueError):  # a categorical value: its null indicator still counts
            value_auc = None
    return value_auc, folded(null, labels)


def _naive_training_set(store: FeatureStore, spine: Any, table: str, time_col: str) -> Any:
    """The join most pipelines do: the latest event_time <= prediction_time, whenever it landed.
    Returns (values per feature, whether the row used had landed) in spine order."""
    t = store.table(table)
    con = connect()
    try:
        register(con, "spine_src", spine)
        on = " AND ".join(f's."{k}" = f."{k}"' for k in t.entity)
        feats = ", ".join(f'f."{c}"' for c in t.features)
        plain = ", ".join(f'c."{c}"' for c in t.features)
        sql = (
            f'WITH s AS (SELECT *, CAST("{time_col}" AS TIMESTAMP) AS __pt, row_number() OVER () AS __row '
            f"FROM spine_src), c AS (SELECT * FROM (SELECT s.__row, {feats}, "
            "f.available_at <= s.__pt AS __landed, row_number() OVER (PARTITION BY s.__row "
            "ORDER BY f.event_time DESC, f.available_at DESC) AS __rank "
            f"FROM s JOIN read_parquet('{t.glob}') f ON {on} AND f.event_time <= s.__pt) WHERE __rank = 1) "
            f"SELECT {plain}, c.__landed FROM s LEFT JOIN c ON c.__row = s.__row ORDER BY s.__row"
        )
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def latency(store: FeatureStore, table: str) -> dict[str, float | None]:
    con = connect()
    try:
        p50, p95, worst = lag_quantiles(con, store.table(table).glob)
    finally:
        con.close()
    return {"p50": p50, "p95": p95, "max": worst}


# How late rows land, in spans a person reads at a glance: (label, upper bound in seconds)
LAG_SPANS = (("on time", 0.0), ("<1m", 60.0), ("1-10m", 600.0), ("10m-1h", 3600.0), ("1-6h", 21600.0),
             ("6h-1d", 86400.0), ("1-7d", 604800.0), (">7d", math.inf))  # fmt: skip


def latency_histogram(store: FeatureStore, table: str) -> list[dict[str, Any]]:
    """Rows per span of ``available_at - event_time``."""
    lag = "epoch(available_at) - epoch(event_time)"
    cases = " ".join(f"WHEN {lag} <= {bound} THEN {i}" for i, (_, bound) in enumerate(LAG_SPANS[:-1]))
    con = connect()
    try:
        got = dict(
            con.execute(
                f"SELECT CASE {cases} ELSE {len(LAG_SPANS) - 1} END AS span, count(*) "
                f"FROM read_parquet('{store.table(table).glob}') GROUP BY span"
            ).fetchall()
        )
    finally:
        con.close()
    return [{"label": label, "rows": int(got.get(i, 0))} for i, (label, _) in enumerate(LAG_SPANS)]


def audit(
    store: FeatureStore,
    spine: Any,
    tables: list[str],
    label: str,
    split: str | None = None,
    time_col: str = "prediction_time",
) -> dict[str, Any]:
    """The report: one verdict per feature, a summary, and the train/test time overlap when ``split``."""
    import pyarrow as pa

    if not isinstance(spine, pa.Table):
        con = connect()
        register(con, "spine_file", spine)
        spine = con.sql("SELECT * FROM spine_file").to_arrow_table()
        con.close()
    if label not in spine.column_names:
        raise ConfigError(
            "spine", label, "label column not in the spine", f"it has: {', '.join(spine.column_names)}"
        )
    labels = np.array(spine.column(label).to_pylist(), dtype=float)
    pit = build_training_set(store, spine, tables, time_col=time_col)
    verdicts = []
    for name in tables:
        step(f"auditing table {name}")
        t = store.table(name)
        naive = _naive_training_set(store, spine, name, time_col)
        landed = naive.column("__landed").to_pylist()
        lag = latency(store, name)
        for feature in t.features:
            naive_values = naive.column(feature).to_pylist()
            pit_values = pit.column(feature).to_pylist()
            early = sum(
                1 for a, b, ok in zip(naive_values, pit_values, landed, strict=True) if ok is False and a != b
            )
            rate = round(early / max(1, len(naive_values)), 4)
            nv, nn = _power(naive_values, labels)
            pv, pn = _power(pit_values, labels)
            naive_power = max((x for x in (nv, nn) if x is not None), default=0.5)
            pit_power = max((x for x in (pv, pn) if x is not None), default=0.5)
            which = "its null indicator" if nn is not None and nn == naive_power and nn != nv else "its value"
            if rate >= LEAK_RATE and naive_power - pit_power >= POWER_GAIN:
                verdict, reason = (
                    "leak",
                    (
                        f"in {rate:.1%} of rows a join on event_time uses a value that had not landed by "
                        f"prediction time, and {which} then predicts the label (AUC {naive_power:.2f}; "
                        f"{pit_power:.2f} with what was really there)"
                    ),
                )
            elif pit_power >= NEAR_PERFECT:
                verdict, reason = (
                    "suspicious",
                    (
                        f"predicts the label almost perfectly on its own (AUC {pit_power:.2f}) even "
                        "point-in-time: check it is not computed from the outcome"
                    ),
                )
            elif rate >= LEAK_RATE:
                verdict, reason = (
                    "late",
                    (
                        f"lands late (latency p50 {_duration(lag['p50'])}, p95 {_duration(lag['p95'])}): "
                        f"in {rate:.1%} of rows a join on event_time would use a value that had not landed "
                        f"yet, but it predicts the label as well either way (AUC {naive_power:.2f} naive, "
                        f"{pit_power:.2f} point-in-time): an honest feature with latency; build training "
                        "sets with the point-in-time join"
                    ),
                )
            else:
                verdict, reason = "ok", "every value used was available at prediction time"
            verdicts.append(
                FeatureVerdict(
                    name,
                    feature,
                    verdict,
                    reason,
                    lag,
                    rate,
                    {"naive_value": nv, "naive_null": nn, "pit_value": pv, "pit_null": pn},
                )
            )
    report: dict[str, Any] = {
        "features": [asdict(v) for v in verdicts],
        "summary": {k: sum(1 for v in verdicts if v.verdict == k) for k in VERDICTS},
    }
    report["latency_hist"] = {name: latency_histogram(store, name) for name in tables}
    if split is not None:
        report["split"] = _split_overlap(spine, split, time_col)
    return report


def _split_overlap(spine: Any, split: str, time_col: str) -> dict[str, Any]:
    sides: dict[str, list[Any]] = {}
    for side, at in zip(spine.column(split).to_pylist(), spine.column(time_col).to_pylist(), strict=True):
        sides.setdefault(str(side), []).append(at)
    ranges = {k: (min(v), max(v)) for k, v in sides.items()}
    out: dict[str, Any] = {"ranges": {k: [str(a), str(b)] for k, (a, b) in ranges.items()}}
    if {"train", "test"} <= set(ranges):
        train_last, test_first = ranges["train"][1], ranges["test"][0]
        overlap = train_last >= test_first  # test does not start after the last training prediction
        out["overlap"] = overlap
        out["verdict"] = "suspicious" if overlap else "ok"
        out["reason"] = (
            "train and test prediction times overlap: the model can learn from the test period"
            if overlap
            else "test comes after train"
        )
    return out
