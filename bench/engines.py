"""What failsoft adds in front of a real serving engine, at concurrency 1: MLServer 1.7 (its scikit-learn
runtime, a binary classifier, parallel workers off) called directly, and the same call through failsoft's
``oip`` tier (the recipe: ``output_name = "predict_proba"``, ``column = 1``), interleaved request by
request on keep-alive connections so both see the same machine. MLServer comes from the engines'
virtualenv (tests/engines/engine.py builds it once). Prints p50/p90/p99 of each, the difference and the
ratio; the last line is one JSON object.

    python bench/engines.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from failsoft.demo.procs import Proc  # noqa: E402
from tests.engines.engine import MLServer, engines_venv, sklearn_model  # noqa: E402
from tests.portfolios import default_tier, model, oip_tier, toml  # noqa: E402

FEATURES = ["tenure", "spend", "visits", "tickets"]


def quantiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100)
    return {"p50": round(q[49], 3), "p90": round(q[89], 3), "p99": round(q[98], 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=3000, help="requests to each, after 300 of warm-up")
    args = ap.parse_args()
    venv = engines_venv()
    work = Path(tempfile.mkdtemp(prefix="failsoft-engines-"))
    x, y = make_classification(n_samples=600, n_features=4, n_informative=3, n_redundant=0, random_state=7)
    joblib.dump(LogisticRegression().fit(x, y), work / "churn.joblib")
    sklearn_model(work / "models" / "churn", "churn", work / "churn.joblib")
    engine = MLServer(venv, work / "models", work / "mlserver.log").start()
    tier = oip_tier("mlserver", engine.url, "churn", output_name="predict_proba", column=1, timeout_ms=500)
    inputs = tuple({"name": f, "min": -100, "max": 100} for f in FEATURES)
    churn = model(tier, default_tier(0.5), inputs=inputs, output={"type": "float", "min": 0, "max": 1},
                  deadline_ms=1000)  # fmt: skip
    (work / "portfolio.toml").write_text(toml({"churn": churn}, data_dir=str(work / "state")))
    serve = ["serve", str(work / "portfolio.toml"), "--log-level", "warning"]
    gateway = Proc(
        [sys.executable, "-m", "failsoft.cli", *serve],
        "/v2/health/ready",
        work / "gateway.log",
    ).start()
    try:
        row = x[0].tolist()
        body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": row}]}
        direct = json.dumps({**body, "outputs": [{"name": "predict_proba"}]}).encode()
        via = json.dumps(body).encode()
        targets = {
            "mlserver": (http.client.HTTPConnection("127.0.0.1", engine.port), direct),
            "failsoft": (http.client.HTTPConnection("127.0.0.1", gateway.port), via),
        }
        took: dict[str, list[float]] = {name: [] for name in targets}
        tiers: set[str] = set()
        headers = {"Content-Type": "application/json"}
        for i in range(300 + args.requests):
            for name, (conn, payload) in targets.items():
                t0 = time.perf_counter()
                conn.request("POST", "/v2/models/churn/infer", payload, headers)
                reply = conn.getresponse()
                data = reply.read()
                elapsed = (time.perf_counter() - t0) * 1000
                assert reply.status == 200, data
                if i >= 300:
                    took[name].append(elapsed)
                    if name == "failsoft":
                        tiers.add(json.loads(data)["parameters"]["failsoft_tier"])
        assert tiers == {"mlserver"}, f"answered by {tiers}: the engine's tier was passed over"
    finally:
        gateway.stop()
        engine.stop()
    direct_q, via_q = quantiles(took["mlserver"]), quantiles(took["failsoft"])
    added = {k: round(via_q[k] - direct_q[k], 3) for k in direct_q}
    print(f"{'':10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}   ({args.requests} requests each, c=1)")
    for name, q in (("mlserver", direct_q), ("failsoft", via_q), ("added", added)):
        print(f"{name:10} {q['p50']:8.3f} {q['p90']:8.3f} {q['p99']:8.3f}")
    ratio = round(via_q["p50"] / direct_q["p50"], 3)
    print(f"through failsoft / direct, p50: {ratio}")
    summary = {"mlserver": direct_q, "failsoft": via_q, "added_ms": added, "p50_ratio": ratio}
    print(json.dumps({**summary, "requests": args.requests}))


if __name__ == "__main__":
    main()
