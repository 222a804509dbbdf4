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
    inputs = "".join(f'[[models.churn.inputs]]\nname = "{f}"\nmin = -50\nmax = 50\n' for f in FEATURES)
    breaker = (
        "breaker = { window = 10, min_calls = 5, failure_rate = 0.5, open_ms = 300, half_open_probes = 1 }"
    )
    return f"""
trusted_model_dirs = ["{models_dir}"]
data_dir = "{models_dir / "state"}"
[server]
max_body_bytes = 20000
max_batch = 64

[models.churn]
version = "7"
deadline_ms = 60
{inputs}
[models.churn.output]
type = "float"
min = 0
max = 1

# watched, never acted on here: the chaos traffic is 5% corrupt
[models.churn.monitor]
learn_rows = 50
window_rows = 50
action = "warn"

[[models.churn.tiers]]
name = "heavy"
kind = "oip"
url = "{backend_url}"
model_name = "churn"
timeout_ms = 25
max_concurrency = 8
{breaker}

[[models.churn.tiers]]
name = "json"
kind = "http"
url = "{backend_url}/json/churn"
output_path = "result.score"
timeout_ms = 15
{breaker}

[[models.churn.tiers]]
name = "cpu"
kind = "python"
path = "{models_dir / "cpu.joblib"}"

[[models.churn.tiers]]
kind = "default"
name = "base-rate"
value = 0.2
"""


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
