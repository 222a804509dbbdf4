"""failsoft in front of a real MLServer (1.7, its scikit-learn runtime) serving a binary classifier: the
answers are MLServer's class-1 probabilities, ``check --load`` names each way a tier can be set up wrong
for it, and a kill -9 under traffic costs no request an error."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from failsoft.cli import main
from failsoft.demo.procs import Proc
from tests.engines.conftest import FEATURES
from tests.engines.engine import MLServer
from tests.http import post
from tests.portfolios import default_tier, model, oip_tier, toml

BREAKER = {"window": 10, "min_calls": 3, "failure_rate": 0.5, "open_ms": 300, "half_open_probes": 1}
INPUTS = tuple({"name": f, "min": -100, "max": 100} for f in FEATURES)
PROBABILITY = {"type": "float", "min": 0, "max": 1}


def engine_tier(url: str, **keys: Any) -> dict[str, Any]:
    """The recipe for MLServer's scikit-learn runtime: ask for predict_proba, read column 1."""
    tier = {"output_name": "predict_proba", "column": 1, "timeout_ms": 300, "breaker": BREAKER, **keys}
    return oip_tier("mlserver", url, "churn", **tier)


def portfolio(tmp: Path, url: str, inputs: tuple[Any, ...] = INPUTS, **tier: Any) -> Path:
    features = engine_tier(url, input_mode="features", parameters={"content_type": "pd"})
    models = {
        "churn": model(engine_tier(url, **tier), default_tier(0.5), inputs=inputs, output=PROBABILITY,
                       deadline_ms=1000),
        "churn_pd": model(features, default_tier(0.5), inputs=INPUTS, output=PROBABILITY, deadline_ms=1000),
    }  # fmt: skip
    path = tmp / "portfolio.toml"
    path.write_text(toml(models, data_dir=str(tmp / "state"), store={"log_predictions": False}))
    return path


def gateway(path: Path, *flags: str) -> Proc:
    args = [sys.executable, "-m", "failsoft.cli", "serve", str(path), "--log-level", "warning", *flags]
    return Proc(args, "/v2/health/ready", path.with_suffix(".log"))


def test_answers_are_mlservers_class_one_probabilities(
    mlserver: MLServer, churn: tuple[Path, np.ndarray, LogisticRegression], tmp_path: Path
) -> None:
    _, x, clf = churn
    rows = [dict(zip(FEATURES, r, strict=True)) for r in x.tolist()]
    direct = post(
        f"{mlserver.url}/v2/models/churn/infer",
        {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}],
         "outputs": [{"name": "predict_proba"}]},
    ).json()["outputs"][0]  # fmt: skip
    engine = np.asarray(direct["data"]).reshape(direct["shape"])[:, 1]
    assert engine == pytest.approx(clf.predict_proba(x)[:, 1])
    gw = gateway(portfolio(tmp_path, mlserver.url)).start()
    try:
        for name in ("churn", "churn_pd"):  # one tensor [500, 4]; one tensor per feature, as a DataFrame
            out = post(f"{gw.url}/v1/models/{name}/predict", {"inputs": rows}).json()
            assert (out["tier"], out["degraded"]) == ("mlserver", False), out
            assert out["outputs"] == pytest.approx(engine.tolist(), abs=1e-12)
        one = post(f"{gw.url}/v1/models/churn/predict", {"inputs": rows[0]}).json()
        assert one["tier"] == "mlserver" and one["outputs"] == pytest.approx(engine[0])
    finally:
        gw.stop()


def test_lightgbm_runtime_answers_its_probability(
    mlserver: MLServer,
    churn: tuple[Path, np.ndarray, LogisticRegression],
    booster: tuple[Path, Any],
    tmp_path: Path,
) -> None:
    """The LightGBM runtime's recipe: no output_name, no column (its predict is P(class 1), [n, 1])."""
    _, x, _ = churn
    tier = oip_tier("mlserver", mlserver.url, "churn_lgb", timeout_ms=300, breaker=BREAKER)
    models = {"churn": model(tier, default_tier(0.5), inputs=INPUTS, output=PROBABILITY, deadline_ms=1000)}
    path = tmp_path / "portfolio.toml"
    path.write_text(toml(models, data_dir=str(tmp_path / "state"), store={"log_predictions": False}))
    assert main(["check", "--load", str(path)]) == 0
    gw = gateway(path).start()
    try:
        rows = [dict(zip(FEATURES, r, strict=True)) for r in x.tolist()]
        out = post(f"{gw.url}/v1/models/churn/predict", {"inputs": rows}).json()
    finally:
        gw.stop()
    assert out["tier"] == "mlserver" and out["outputs"] == pytest.approx(booster[1].predict(x).tolist())


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("working", None),
        ("wrong column", "column 2 of output 'predict_proba' (shape [1, 2]) does not exist"),
        ("no content type", "HTTP 400"),
        ("inputs short of the model's", "HTTP 500"),
        ("an output it does not have", "HTTP 400"),
    ],
)
def test_check_load_names_each_fault_and_passes_the_recipe(
    mlserver: MLServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, says: str | None
) -> None:
    tier: dict[str, Any] = {
        "working": {},
        "wrong column": {"column": 2},
        "no content type": {"input_mode": "features"},
        "inputs short of the model's": {},
        "an output it does not have": {"output_name": "proba"},
    }[case]
    inputs = INPUTS[:3] if case == "inputs short of the model's" else INPUTS
    path = portfolio(tmp_path, mlserver.url, inputs, **tier)
    code = main(["check", "--load", str(path)])
    out, err = capsys.readouterr()
    if says is None:
        assert code == 0 and out.strip().endswith(": ok"), (out, err)
        return
    assert code == 1, (out, err)
    line = next(x for x in err.splitlines() if x.startswith("error: churn, tier mlserver"))
    assert says in line and "fix:" in line, line
    assert "1 tier(s) cannot answer a sample row" in err


def test_serve_refuses_a_tier_that_cannot_answer_unless_told(mlserver: MLServer, tmp_path: Path) -> None:
    path = portfolio(tmp_path, mlserver.url, INPUTS[:3])
    with pytest.raises(RuntimeError, match="exited with 3"):
        gateway(path).start()
    said = path.with_suffix(".log").read_text()
    assert "1 tier(s) cannot answer a sample row: churn, tier mlserver" in said and "--allow-unproven" in said
    gw = gateway(path, "--allow-unproven").start()
    try:
        out = post(f"{gw.url}/v1/models/churn/predict", {"inputs": dict.fromkeys(FEATURES[:3], 0.1)}).json()
        assert out["tier"] == "default" and out["skips"][0][:2] == ["mlserver", "error"]
    finally:
        gw.stop()


@pytest.mark.serial
def test_killed_and_restarted_under_traffic(mlserver: MLServer, tmp_path: Path) -> None:
    """kill -9 of the engine mid-traffic: not one non-2xx; the default answers while it is down, and the
    engine answers again within 2 s of being ready."""
    gw = gateway(portfolio(tmp_path, mlserver.url)).start()
    seen: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        row = {"inputs": dict.fromkeys(FEATURES, 0.3)}
        while not stop.is_set():
            reply = post(f"{gw.url}/v1/models/churn/predict", row, timeout=30)
            doc = reply.json() if reply.status_code == 200 else {}
            tier = doc.get("tier", "")
            seen.append(
                (
                    time.monotonic(),
                    reply.status_code,
                    tier if tier == "mlserver" else f"{tier}:{doc.get('skips')}",
                )
            )

    clients = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        for c in clients:
            c.start()
        time.sleep(1.0)
        killed = time.monotonic()  # answers after this may already be the default's
        mlserver.kill()
        time.sleep(1.0)
        mlserver.start()
        ready = time.monotonic()
        time.sleep(3.0)
    finally:
        stop.set()
        for c in clients:
            c.join()
        gw.stop()
    assert [s for s in seen if s[1] != 200] == []
    before = [tier for t, _, tier in seen if t < killed]
    down = [tier for t, _, tier in seen if killed + 0.2 < t < ready]
    assert before and set(before) == {"mlserver"}
    assert down and any(tier.startswith("default") for tier in down)
    back = next(t for t, _, tier in seen if t > ready and tier == "mlserver")
    print(f"{len(seen)} answers, 0 non-2xx; back on the engine {back - ready:.3f} s after it was ready")
    assert back - ready < 2.0, f"back on the engine {back - ready:.2f} s after it was ready"
    after = [tier for t, _, tier in seen if t > ready + 2.0]
    assert after and set(after) == {"mlserver"}, after
