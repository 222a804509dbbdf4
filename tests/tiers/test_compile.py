"""The compiled CPU tier equals the original model to 1e-9, family by family."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from failsoft.tiers.compile import compile_model, compile_row

X, Y = make_classification(n_samples=400, n_features=6, n_informative=4, random_state=0)
XM, YM = make_classification(n_samples=400, n_features=6, n_informative=4, n_classes=3, random_state=1)
XR, YR = make_regression(n_samples=400, n_features=6, random_state=2)
PROBE = np.random.default_rng(5).normal(0, 2, size=(500, 6))


def lgb_classifier() -> Any:
    return lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1).fit(X, Y)


CLASSIFIERS = [
    lambda: LogisticRegression(max_iter=500).fit(X, Y),
    lambda: LogisticRegression(max_iter=500).fit(XM, YM),
    lambda: make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y),
    lambda: make_pipeline(MinMaxScaler(), StandardScaler(), LogisticRegression()).fit(X, Y),
    lambda: DecisionTreeClassifier(max_depth=6, random_state=0).fit(X, Y),
    lambda: RandomForestClassifier(n_estimators=30, random_state=0).fit(X, Y),
    lambda: RandomForestClassifier(n_estimators=20, random_state=0).fit(XM, YM),
    lambda: ExtraTreesClassifier(n_estimators=20, random_state=0).fit(X, Y),
    lambda: GradientBoostingClassifier(n_estimators=40, random_state=0).fit(X, Y),
    lambda: HistGradientBoostingClassifier(max_iter=40).fit(X, Y),
    lambda: HistGradientBoostingClassifier(max_iter=20).fit(XM, YM),
    lgb_classifier,
]


@pytest.mark.parametrize("make", CLASSIFIERS)
@pytest.mark.parametrize("method", ["predict_proba", "predict"])
def test_classifiers_compile_and_match(make: Any, method: str) -> None:
    model = make()
    fast = compile_model(model, method, PROBE)
    assert fast is not None, f"{type(model).__name__}.{method} should compile"
    want, got = getattr(model, method)(PROBE), fast(PROBE)
    if method == "predict":
        assert np.array_equal(want, got)
    else:
        assert np.max(np.abs(want - got)) <= 1e-9
    one = PROBE[:1]
    assert np.allclose(getattr(model, method)(one), fast(one), atol=1e-9, rtol=0)


REGRESSORS = [
    lambda: LinearRegression().fit(XR, YR),
    lambda: make_pipeline(StandardScaler(), Ridge()).fit(XR, YR),
    lambda: RandomForestRegressor(n_estimators=20, random_state=0).fit(XR, YR),
    lambda: GradientBoostingRegressor(n_estimators=40, random_state=0).fit(XR, YR),
    lambda: HistGradientBoostingRegressor(max_iter=40).fit(XR, YR),
    lambda: HistGradientBoostingRegressor(loss="poisson", max_iter=20).fit(XR, np.abs(YR)),
    lambda: lightgbm.LGBMRegressor(n_estimators=30, verbose=-1).fit(XR, YR),
    lambda: lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(X, Y), 20),
]


@pytest.mark.parametrize("make", REGRESSORS)
def test_regressors_and_boosters_compile_and_match(make: Any) -> None:
    model = make()
    fast = compile_model(model, "predict", PROBE)
    assert fast is not None, f"{type(model).__name__} should compile"
    assert np.max(np.abs(model.predict(PROBE) - fast(PROBE))) <= 1e-9 * max(1.0, np.abs(YR).max())


@pytest.mark.parametrize("family", ["lightgbm", "hist-gbm"])
def test_nan_inputs_follow_the_learned_missing_direction(family: str) -> None:
    x = X.copy()
    x[::7, 0] = np.nan
    if family == "lightgbm":
        model: Any = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, Y)
    else:
        model = HistGradientBoostingClassifier(max_iter=20).fit(x, Y)
    probe = PROBE.copy()
    probe[::3, 0] = np.nan
    fast = compile_model(model, "predict_proba", probe)
    assert fast is not None
    assert np.max(np.abs(model.predict_proba(probe) - fast(probe))) <= 1e-9


XC = np.column_stack([np.random.default_rng(3).integers(0, 4, len(X)), X[:, 1:]])


@pytest.mark.parametrize(
    "model",
    [
        KNeighborsClassifier().fit(X, Y),
        HistGradientBoostingClassifier(max_iter=10, categorical_features=[0]).fit(XC, Y),
    ],
    ids=["knn", "hist-gbm-categorical"],
)
def test_unknown_families_run_as_they_are(model: Any) -> None:
    assert compile_model(model, "predict_proba", PROBE) is None


def test_a_compiled_model_that_differs_is_refused() -> None:
    model = LogisticRegression().fit(X, Y)
    model.coef_ = model.coef_.copy()
    original = model.predict_proba

    class Liar:
        """Looks like a logistic regression, but its predict_proba says something else."""

        coef_, intercept_, classes_ = model.coef_, model.intercept_, model.classes_

        def predict_proba(self, x: Any) -> Any:
            return original(x) * 0.5

    Liar.__name__ = "LogisticRegression"
    assert compile_model(Liar(), "predict_proba", PROBE) is None


ROW_MODELS = [
    (lambda: LogisticRegression(max_iter=500).fit(X, Y), "predict_proba"),
    (lambda: LogisticRegression(max_iter=500).fit(X, Y), "predict"),
    (lambda: LogisticRegression(max_iter=500).fit(XM, YM), "predict_proba"),
    (lambda: LogisticRegression(max_iter=500).fit(XM, YM), "predict"),
    (lambda: make_pipeline(StandardScaler(), MinMaxScaler(), LogisticRegression(max_iter=500)).fit(X, Y),
     "predict_proba"),
    (lambda: LinearRegression().fit(XR, YR), "predict"),
    (lambda: Ridge().fit(XR, np.stack([YR, -YR], axis=1)), "predict"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "method"), ROW_MODELS)
def test_the_one_row_form_equals_the_model_row_by_row(make: Any, method: str) -> None:
    """A linear model's one-row form in plain Python (its pipeline's scalers folded into the weights)
    answers what the model answers, row by row, far from the rows it was proven on too."""
    model = make()
    row = compile_row(model, method, PROBE[:64])
    assert row is not None
    want = getattr(model, method)(PROBE)
    for x, w in zip(PROBE.tolist(), want, strict=True):
        got = np.asarray(row(x))
        assert got.shape == np.shape(w)
        assert np.allclose(got, w, rtol=0, atol=1e-9) if want.dtype.kind == "f" else np.array_equal(got, w)


def test_models_without_a_one_row_form_get_none() -> None:
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)
    assert compile_row(forest, "predict_proba", PROBE[:64]) is None
