"""Fixtures for the engine tests: the engines' virtualenv, a scikit-learn churn classifier, and MLServer
serving it (one per test module: a test that kills it starts it again)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from tests.engines.engine import MLServer, engines_venv, runtime_model, sklearn_model

FEATURES = ["tenure", "spend", "visits", "tickets"]


@pytest.fixture(scope="session")
def engines() -> Path:
    return engines_venv()


@pytest.fixture(scope="session")
def churn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, LogisticRegression]:
    """A binary classifier fitted on four unnamed features, its file, and 500 rows it has not seen."""
    d = tmp_path_factory.mktemp("churn")
    x, y = make_classification(n_samples=1100, n_features=4, n_informative=3, n_redundant=0, random_state=7)
    model = LogisticRegression().fit(x[:600], y[:600])
    joblib.dump(model, d / "churn.joblib")
    return d / "churn.joblib", x[600:], model


@pytest.fixture(scope="session")
def booster(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A LightGBM booster (binary objective) on the churn data, saved in LightGBM's text format."""
    import lightgbm

    x, y = make_classification(n_samples=1100, n_features=4, n_informative=3, n_redundant=0, random_state=7)
    params = {"objective": "binary", "verbose": -1, "num_leaves": 8}
    model = lightgbm.train(params, lightgbm.Dataset(x[:600], y[:600]), num_boost_round=20)
    path = tmp_path_factory.mktemp("lgb") / "model.bst"
    model.save_model(str(path))
    return path, model


@pytest.fixture(scope="module")
def mlserver(
    engines: Path,
    churn: tuple[Path, np.ndarray, LogisticRegression],
    booster: tuple[Path, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[MLServer]:
    root = tmp_path_factory.mktemp("mlserver")
    sklearn_model(root / "churn", "churn", churn[0])
    runtime_model(root / "churn_lgb", "churn_lgb", booster[0], "mlserver_lightgbm.LightGBMModel")
    server = MLServer(engines, root, root / "mlserver.log").start()
    yield server
    server.stop()
