"""Real processes on loopback: the demo's OIP backend (which hangs, fails and dies on command) and a
`failsoft serve` gateway in front of it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

N_FEATURES = 6
FEATURES = [f"f{i}" for i in range(N_FEATURES)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    import urllib.request

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


class Proc:
    def __init__(self, args: list[str], ready_path: str, log: Path) -> None:
        self.args, self.ready_path, self.log = args, ready_path, log
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdout=fh, stderr=fh)
        wait_http(self.url + self.ready_path, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


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
