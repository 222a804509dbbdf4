"""Compile fitted models into plain numpy arithmetic, free of per-call input validation.

scikit-learn spends ~90 µs per single-row ``predict_proba`` re-validating input that failsoft has already
checked at its edge; the arithmetic itself takes microseconds. ``compile_model`` turns linear models (and
scaler pipelines in front of them), scikit-learn tree ensembles (histogram boosting included) and LightGBM
boosters into closures over numpy arrays, then proves on sample rows that the closure equals the original
to 1e-9. A model it cannot compile (or whose proof fails) returns ``None`` and runs as it is.
"""

from __future__ import annotations

import logging
import math
import operator
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np

from failsoft.tiers.trees import Array, Compiled, binary, lightgbm_booster, sigmoid, sklearn_trees, softmax

log = logging.getLogger("failsoft.compile")

TOLERANCE = 1e-9


# ---- linear models and the affine steps in front of them ----------------------------------------------


def _affine(step: Any) -> tuple[Array, Array] | None:
    """A preprocessing step as x * a + b, or None when it is not affine."""
    name = type(step).__name__
    if name == "StandardScaler":
        mean = step.mean_ if step.with_mean else np.zeros(step.n_features_in_)
        scale = step.scale_ if step.with_std else np.ones(step.n_features_in_)
        return 1.0 / scale, -mean / scale
    if name == "MinMaxScaler" and not step.clip:
        return np.asarray(step.scale_, float), np.asarray(step.min_, float)
    return None


def _weights(model: Any) -> tuple[Array, Array] | None:
    """A linear model's weights (n_features, n_outputs) and intercepts; None for anything else (or sparse
    weights)."""
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    if coef is None or intercept is None or hasattr(coef, "toarray"):
        return None
    w = np.ascontiguousarray(np.atleast_2d(coef).T, dtype=np.float64)
    return w, np.atleast_1d(np.asarray(intercept, dtype=np.float64))


def _linear(model: Any, method: str) -> Compiled | None:
    name = type(model).__name__
    weights = _weights(model)
    if weights is None:
        return None
    w, b = weights
    if name == "LogisticRegression":
        classes = model.classes_
        if method == "predict_proba":
            if len(classes) <= 2:
                return lambda x: binary(sigmoid((x @ w + b)[:, 0]))
            return lambda x: softmax(x @ w + b)
        if method == "predict":
            if len(classes) <= 2:
                return lambda x: classes[((x @ w + b)[:, 0] > 0).astype(int)]
            return lambda x: classes[np.argmax(x @ w + b, axis=1)]
        return None
    if method == "predict" and name in {"LinearRegression", "Ridge", "Lasso", "ElasticNet", "SGDRegressor"}:
        if np.ndim(model.coef_) == 1:
            return lambda x: (x @ w + b)[:, 0]
        return lambda x: x @ w + b
    return None


# ---- one row in plain Python ---------------------------------------------------------------------------

# One row's answer from its values in feature order: what ``fn(matrix)[0]`` is, as Python values (a list
# where the model answers several columns).
RowFn = Callable[[Sequence[float]], Any]


def _linear_form(model: Any) -> tuple[Any, Array, Array] | None:
    """A linear model, and the affine steps of a pipeline in front of it folded in: (the model, weights
    (n_features, n_outputs), intercepts); None for anything else."""
    pre: list[tuple[Array, Array]] = []
    if type(model).__name__ == "Pipeline":
        steps = [s for _, s in model.steps if s is not None and s != "passthrough"]
        *front, model = steps
        for step in front:
            affine = _affine(step)
            if affine is None:
                return None
            pre.append(affine)
    weights = _weights(model)
    if weights is None:
        return None
    w, b = weights
    for a, c in reversed(pre):  # (x * a + c) @ w + b = x @ (a[:, None] * w) + (c @ w + b)
        b = c @ w + b
        w = a[:, None] * w
    return model, w, b


def _row_linear(model: Any, method: str) -> RowFn | None:
    form = _linear_form(model)
    if form is None:
        return None
    model, w, b = form
    name = type(model).__name__
    cols = [w[:, j].tolist() for j in range(w.shape[1])]
    bias = b.tolist()
    exp, inf, mul = math.exp, math.inf, operator.mul

    def scores(x: Sequence[float]) -> list[float]:
        return [sum(map(mul, x, c), bj) for c, bj in zip(cols, bias, strict=True)]

    if name == "LogisticRegression":
        classes = model.classes_.tolist()
        if len(classes) <= 2:
            (w0,), (b0,) = cols, bias
            if method == "predict_proba":

                def proba(x: Sequence[float]) -> list[float]:
                    z = sum(map(mul, x, w0), b0)
                    p = 1.0 / (1.0 + (exp(-z) if z > -700.0 else inf))
                    return [1.0 - p, p]

                return proba
            if method == "predict":
                return lambda x: classes[sum(map(mul, x, w0), b0) > 0]
            return None
        if method == "predict_proba":

            def softmax_row(x: Sequence[float]) -> list[float]:
                z = scores(x)
                top = max(z)
                e = [exp(v - top) for v in z]
                total = sum(e)
                return [v / total for v in e]

            return softmax_row
        if method == "predict":
            return lambda x: (z := scores(x)) and classes[z.index(max(z))]
        return None
    if method == "predict" and name in {"LinearRegression", "Ridge", "Lasso", "ElasticNet", "SGDRegressor"}:
        if np.ndim(model.coef_) == 1:
            (w0,), (b0,) = cols, bias
            return lambda x: sum(map(mul, x, w0), b0)
        return scores
    return None


def unproven_row(model: Any, method: str) -> RowFn | None:
    """The one-row form, not checked against the model (see ``unproven``)."""
    try:
        return _row_linear(model, method)
    except Exception as err:  # an unfamiliar model shape: the matrix form answers
        log.info("model %s has no one-row form: %s", type(model).__name__, err)
        return None


def compile_row(model: Any, method: str, sample: Array) -> RowFn | None:
    """The one-row form of a linear model (its pipeline's affine steps folded in) in plain Python, free of
    numpy's per-call cost, proven equal to ``getattr(model, method)`` row by row on ``sample``; else None."""
    row = unproven_row(model, method)
    if row is None:
        return None
    original = model.predict if method == "predict" else getattr(model, method)
    want = np.asarray(original(sample))
    for i, x in enumerate(sample[:64].tolist()):
        got = np.asarray(row(x))
        if got.shape != want[i].shape:
            return None
        if want.dtype.kind in "fc" and not bool(np.all(np.abs(want[i] - got) <= TOLERANCE)):
            return None
        if want.dtype.kind not in "fc" and not bool(np.array_equal(want[i], got)):
            return None
    return row


# ---- the entry point ---------------------------------------------------------------------------------


def _compile(model: Any, method: str) -> Compiled | None:
    if type(model).__name__ == "Pipeline":
        steps = [s for _, s in model.steps if s is not None and s != "passthrough"]
        *pre, last = steps
        affine = [_affine(s) for s in pre]
        if any(a is None for a in affine):
            return None
        inner = _compile(last, method)
        if inner is None:
            return None
        pairs = [a for a in affine if a is not None]

        def piped(x: Array) -> Array:
            for a, b in pairs:
                x = x * a + b
            return inner(x)

        return piped
    module = type(model).__module__
    if module.startswith("lightgbm"):
        return lightgbm_booster(model, method)
    return _linear(model, method) or sklearn_trees(model, method)


def unproven(model: Any, method: str) -> Compiled | None:
    """The compiled closure, not checked against the model: for a model equal to one ``compile_model`` has
    proven (the same file, loaded in another process: tiers/helper.py)."""
    try:
        return _compile(model, method)
    except Exception as err:  # an unfamiliar model shape: run it as it is
        log.info("model %s not compiled: %s", type(model).__name__, err)
        return None


def compile_model(model: Any, method: str, sample: Array) -> Compiled | None:
    """A validation-free equivalent of ``getattr(model, method)``, proven equal on ``sample``; else None."""
    fast = unproven(model, method)
    if fast is None:
        return None
    original = model.predict if method == "predict" else getattr(model, method)
    try:
        want = np.asarray(original(sample))
    except Exception as err:  # the model itself cannot answer them: the probe says why, with the fix
        log.info("%s failed on sample rows (%s); not compiled", type(model).__name__, err)
        return None
    try:
        got = np.asarray(fast(sample))
    except Exception as err:
        log.warning("compiled %s failed on sample rows (%s); running it as it is", type(model).__name__, err)
        return None
    if want.shape != got.shape:
        return None
    if want.dtype.kind in "fc":
        equal = bool(np.all(np.abs(want - got) <= TOLERANCE))
    else:
        equal = bool(np.array_equal(want, got))
    if not equal:
        log.warning(
            "compiled %s differs from the original on sample rows; running it as it is", type(model).__name__
        )
        return None
    return fast


def sample_rows(ranges: list[tuple[float | None, float | None]], n: int = 256) -> Array:
    """Rows that exercise a model: uniform inside each feature's declared range, else inside [-3, 3]."""
    rng = np.random.default_rng(0)
    lo = np.array([-3.0 if a is None else a for a, _ in ranges])
    hi = np.array([3.0 if b is None else b for _, b in ranges])
    return rng.uniform(lo, hi, size=(n, len(ranges)))


class Measured(msgspec.Struct, array_like=True):
    """What building a tier found of its model (``PythonBackend.measured``): the method it calls, whether
    it compiled (proven on sample rows) and has a one-row form, and the costs measured."""

    method: str
    compiled: bool = False
    row_form: bool = False
    own_from_rows: int | None = None
    single_row_us: float = float("inf")
    inline_rows: int = sys.maxsize


# ---- which call is cheaper, by batch size -------------------------------------------------------------


def cost_us(fn: Callable[[Array], Any], rows: Array, calls: int = 3, within_s: float = 0.05) -> float:
    """The median time of one call on ``rows``, in microseconds: of ``calls`` calls, or as many as fit in
    ``within_s`` (at least three) for a slow model, which loads no slower for being measured. Three: a
    load measures four such costs (compiled and own, one row and a batch), and while it does, the loader's
    thread holds the interpreter from the event loop; at 15 calls they were 4.2 ms of a small model's
    6.4 ms load, and the hot models' p99 (their clients') with 20 cold loads a second fell from 4.6 ms to
    3.2 ms at three (quiet: 1.6-1.8 ms)."""
    times: list[float] = []
    spent = 0.0
    while len(times) < calls and (len(times) < 3 or spent < within_s):
        t = time.perf_counter()
        fn(rows)
        times.append(time.perf_counter() - t)
        spent += times[-1]
    return sorted(times)[len(times) // 2] * 1e6


class Cost:
    """What a call costs by its number of rows, in microseconds: a fixed part and a part per row, from
    two measured calls (one row, and ``n`` rows)."""

    __slots__ = ("one", "per_row")

    def __init__(self, fn: Callable[[Array], Array], sample: Array) -> None:
        self.one = cost_us(fn, sample[:1])
        self.per_row = max(0.0, (cost_us(fn, sample) - self.one) / max(1, len(sample) - 1))

    def rows_within(self, budget_us: float) -> int:
        """The most rows a call takes within ``budget_us``."""
        if self.one > budget_us:
            return 0
        return sys.maxsize if self.per_row == 0 else 1 + int((budget_us - self.one) / self.per_row)

    def beaten_from(self, other: Cost) -> int | None:
        """The fewest rows from which ``other`` is the cheaper call (None: never; 1: always)."""
        if other.one <= self.one:
            return 1
        if other.per_row >= self.per_row:
            return None
        return 2 + int((other.one - self.one) / (self.per_row - other.per_row))


def cheapest(fast: Compiled, own: Compiled, sample: Array) -> tuple[Compiled, int | None, Cost, Cost]:
    """The compiled closure for the batch sizes where it is the cheaper call, the model's own method from
    the size where that is (vectorised in C, a tree ensemble's own loop costs less per row than a compiled
    walk): the function, that size (None: never), and the two measured costs."""
    compiled, original = Cost(fast, sample), Cost(own, sample)
    switch = compiled.beaten_from(original)
    if switch is not None and switch > 4 * len(sample):
        switch = None  # far past the sizes measured: a guess, and both are cheap there
    return by_size(fast, own, switch), switch, compiled, original


def by_size(fast: Compiled, own: Compiled, switch: int | None) -> Compiled:
    """The compiled closure below ``switch`` rows, the model's own method from there (None: never)."""
    if switch is None:
        return fast
    if switch <= 1:
        return own
    return lambda x: fast(x) if len(x) < switch else own(x)
