"""Performance: realized once labels arrive, estimated before they do.

Estimation is confidence-based (CBPE): a binary classifier's scores, calibrated on labelled reference data
(isotonic regression), are the probability that each row is positive, so each window's confusion matrix has
an expected value, and from it accuracy, F1 and ROC AUC. It holds while the relation between inputs and
label stays the one seen in the reference (covariate shift), which is when it is needed: the inputs moved
and the labels are not in yet.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec
import numpy as np
import numpy.typing as npt

from failsoft.shadow.evaluate import per_request

Array = npt.NDArray[np.float64]


def _ece(y: Array, p: Array, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    n = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, y, bins) - np.bincount(idx, p, bins))
    return float(gap.sum() / max(n.sum(), 1))


class Calibration(msgspec.Struct, frozen=True):
    """Isotonic map from the model's score to the probability of the positive class (empty: the scores are
    already calibrated), and the threshold that turns a score into a predicted class."""

    x: list[float]
    y: list[float]
    threshold: float = 0.5

    def apply(self, scores: Array) -> Array:
        if not self.x:
            return np.clip(scores, 0.0, 1.0)
        return np.interp(scores, self.x, self.y)


def fit_calibration(y: Array, scores: Array, threshold: float = 0.5, folds: int = 10) -> Calibration:
    """The isotonic map from scores to P(positive), kept only when it lowers the expected calibration error
    on every held-out fold (already calibrated scores are left alone: an isotonic fit would only add
    steps)."""
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    helps = True
    for part in np.array_split(order, folds):
        train = np.setdiff1d(order, part)
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores[train], y[train])
        if _ece(y[part], iso.predict(scores[part])) > _ece(y[part], np.clip(scores[part], 0, 1)):
            helps = False
            break
    if not helps:
        return Calibration([], [], threshold)
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(scores, y)
    return Calibration(iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist(), threshold)


def estimated_auc(calibrated: Array, scores: Array) -> float:
    """Expected ROC AUC: walk the scores from the top; each row adds its calibrated probability to the
    expected true positives and the rest to the false positives."""
    if len(scores) < 2:
        return math.nan
    order = np.argsort(scores, kind="stable")[::-1]
    tps = np.concatenate([[0.0], np.cumsum(calibrated[order])])
    fps = np.arange(len(tps), dtype=np.float64) - tps
    if tps[-1] <= 0 or fps[-1] <= 0:
        return math.nan
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    return float((np.diff(fpr) * (tpr[1:] + tpr[:-1])).sum() / 2)


def estimate(calibration: Calibration, scores: Array, predicted: Array | None = None) -> dict[str, float]:
    """Estimated accuracy, F1 and ROC AUC of one window of scores (``predicted`` classes default to the
    scores against the calibration's threshold)."""
    keep = ~np.isnan(scores)
    scores = scores[keep]
    if predicted is not None:
        predicted = predicted[keep]
    if len(scores) == 0:
        return {}
    p = calibration.apply(scores)
    yhat = (scores >= calibration.threshold).astype(np.float64) if predicted is None else predicted
    tp, fp = float((p * yhat).sum()), float(((1 - p) * yhat).sum())
    fn, tn = float((p * (1 - yhat)).sum()), float(((1 - p) * (1 - yhat)).sum())
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else math.nan
    return {
        "roc_auc": estimated_auc(p, scores),
        "accuracy": (tp + tn) / len(scores),
        "f1": f1,
        "positive_rate": float(p.mean()),
    }


def auc(y: Array, s: Array) -> float:
    pos = y == 1
    m, n = int(pos.sum()), int((~pos).sum())
    if m == 0 or n == 0:
        return math.nan
    from scipy.stats import rankdata  # imported when first judged: scipy.stats takes a second to import

    r = rankdata(s)
    return float((r[pos].sum() - m * (m + 1) / 2) / (m * n))


def realized(task: str, y: Any, outputs: Any, threshold: float = 0.5, k: int = 10) -> dict[str, float]:
    """Realized performance: binary (ROC AUC, accuracy, F1, log loss of P(positive) scores), multiclass
    (accuracy, macro F1), regression (MAE, RMSE), ranking (hit rate at k: the item taken was among the
    first k served)."""
    if len(y) == 0:
        return {}
    if task == "ranking":
        hits = [float(label in list(out)[:k]) for label, out in zip(y, outputs, strict=True)]
        return {f"hit_rate@{k}": float(np.mean(hits))}
    if task == "multiclass":
        ya, pa = np.asarray(y, dtype=object).astype(str), np.asarray(outputs, dtype=object).astype(str)
        f1s = []
        for c in np.unique(np.concatenate([ya, pa])):
            tp = float(((pa == c) & (ya == c)).sum())
            denom = float((pa == c).sum() + (ya == c).sum())
            f1s.append(2 * tp / denom if denom else 0.0)
        return {"accuracy": float((ya == pa).mean()), "f1_macro": float(np.mean(f1s))}
    ya, sa = np.asarray(y, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    if task == "regression":
        return {
            "mae": float(per_request("mae", ya, sa).mean()),
            "rmse": float(np.sqrt(per_request("brier", ya, sa).mean())),  # the squared error, per request
        }
    yhat = sa >= threshold
    pos = ya == 1
    tp = float((yhat & pos).sum())
    f1 = 2 * tp / float(yhat.sum() + pos.sum()) if yhat.sum() + pos.sum() else math.nan
    loss = float(per_request("log_loss", ya, sa).mean())
    return {"roc_auc": auc(ya, sa), "accuracy": float((yhat == pos).mean()), "f1": f1, "log_loss": loss}
