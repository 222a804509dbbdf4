"""KServe's own Python client (``InferenceRESTClient``, Open Inference Protocol v2), unmodified, as a
client of failsoft: health, model readiness and inference with JSON and binary tensors. It runs in the
engines' virtualenv (KServe pins packages the test environment's oracles cannot share)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import Proc
from tests.engines.conftest import FEATURES
from tests.portfolios import default_tier, model, python_tier, toml

CLIENT = """
import asyncio, json, sys
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

async def main(url, rows):
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    x = np.array(rows, dtype=np.float64)
    out = {"live": await client.is_server_live(url), "ready": await client.is_server_ready(url),
           "model_ready": await client.is_model_ready(url, "churn")}
    for how in ("json", "binary"):
        tensor = InferInput("input", list(x.shape), "FP64")
        tensor.set_data_from_numpy(x, binary_data=how == "binary")
        req = InferRequest("churn", [tensor], request_id=f"kserve-{how}")
        res = await client.infer(url, req, model_name="churn")
        out[how] = {"id": res.id, "model": res.model_name, "data": res.outputs[0].as_numpy().tolist(),
                    "parameters": dict(res.parameters or {})}
    await client.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""


def test_kserve_rest_client_against_failsoft(
    engines: Path, churn: tuple[Path, np.ndarray, LogisticRegression], tmp_path: Path
) -> None:
    path, x, clf = churn
    m = model(python_tier("cpu", path=path), default_tier(0.5), inputs=tuple(FEATURES),
              output={"type": "float", "min": 0, "max": 1})  # fmt: skip
    portfolio = tmp_path / "portfolio.toml"
    portfolio.write_text(
        toml({"churn": m}, data_dir=str(tmp_path / "state"), trusted_model_dirs=[str(path.parent)])
    )
    gw = Proc(
        [sys.executable, "-m", "failsoft.cli", "serve", str(portfolio), "--log-level", "warning"],
        "/v2/health/ready",
        tmp_path / "gateway.log",
    ).start()
    rows = x[:5].tolist()
    try:
        done = subprocess.run(
            [str(engines / "bin" / "python"), "-c", CLIENT, gw.url, json.dumps(rows)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        gw.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["live"] and said["ready"] and said["model_ready"]
    expected = clf.predict_proba(x[:5])[:, 1]
    for how in ("json", "binary"):
        answer = said[how]
        assert (answer["id"], answer["model"]) == (f"kserve-{how}", "churn")
        assert answer["data"] == pytest.approx(expected.tolist())
        assert answer["parameters"]["failsoft_tier"] == "cpu"
