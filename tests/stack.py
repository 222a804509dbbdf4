"""Real processes on loopback: the demo's OIP backend (which hangs, fails and dies on command) and a
`failsoft serve` gateway in front of it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import Proc
from tests.portfolios import default_tier, model, oip_tier, python_tier, toml

N_FEATURES = 6
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("models")
    x, y = make_classification(n_samples=600, n_features=N_FEATURES, n_informative=4, random_state=0)
    joblib.dump(GradientBoostingClassifier(n_estimators=30, random_state=0).fit(x, y), d / "heavy.joblib")
    joblib.dump(LogisticRegression().fit(x, y), d / "cpu.joblib")
    return d


def gateway_toml(models_dir: Path, backend_url: str) -> str:
    """``churn``: a remote OIP tier, a plain-JSON tier on the same backend, an in-process model, a default."""
    breaker = {"window": 10, "min_calls": 5, "failure_rate": 0.5, "open_ms": 300, "half_open_probes": 1}
    churn = model(
        oip_tier("heavy", backend_url, "churn", timeout_ms=25, max_concurrency=8, breaker=breaker),
        {
            "name": "json",
            "kind": "http",
            "url": f"{backend_url}/json/churn",
            "output_path": "result.score",
            "timeout_ms": 15,
            "breaker": breaker,
        },
        python_tier("cpu", path=models_dir / "cpu.joblib"),
        default_tier(0.2, name="base-rate"),
        inputs=tuple({"name": f, "min": -50, "max": 50} for f in FEATURES),
        output={"type": "float", "min": 0, "max": 1},
        version="7",
        # watched, never acted on here: the chaos traffic is 5% corrupt
        monitor={"learn_rows": 50, "window_rows": 50, "action": "warn"},
    )
    return toml(
        {"churn": churn},
        trusted_model_dirs=[str(models_dir)],
        data_dir=str(models_dir / "state"),
        server={"max_body_bytes": 20000, "max_batch": 64},
    )


def start_pair(models_dir: Path, tag: str) -> tuple[Proc, Proc]:
    backend = Proc(
        [sys.executable, "-m", "failsoft.demo.backend", "--model", f"churn={models_dir / 'heavy.joblib'}"],
        "/v2/health/ready",
        models_dir / f"backend-{tag}.log",
        remote=True,
    ).start()
    toml = models_dir / f"portfolio-{tag}.toml"
    toml.write_text(gateway_toml(models_dir, backend.url))
    gateway = Proc(
        [sys.executable, "-m", "failsoft.cli", "serve", str(toml), "--log-level", "warning"],
        "/v2/health/ready",
        models_dir / f"gateway-{tag}.log",
    ).start()
    return backend, gateway


@pytest.fixture(scope="session")
def stack(models_dir: Path) -> Iterator[tuple[Proc, Proc]]:
    backend, gateway = start_pair(models_dir, "api")
    yield backend, gateway
    gateway.stop()
    backend.stop()


os.environ.setdefault("PYTHONUNBUFFERED", "1")
