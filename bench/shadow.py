"""What mirroring costs live traffic: failsoft with no shadows, side by side with failsoft copying every
request to two shadow candidates (sample = 1.0), in one run.

Same model and server as bench/overhead.py (logistic regression on scikit-learn's bundled breast-cancer
set, 30 floats a row, compiled at load, deadline 50 ms, every answer logged); the two candidates are the
same model loaded twice more, so their answers are logged too (three log rows per request instead of one).
Load from wrk over loopback at concurrency 32, the two configurations alternated for ``--rounds`` rounds.
The last line printed is one JSON object with the medians and the ratios (shadows / none).

    python bench/shadow.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import urllib.request
from pathlib import Path

import joblib
from overhead import portfolio, served, wrk
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

CANDIDATES = """
[[models.m.candidates]]
name = "{name}"
kind = "python"
path = "{path}"
sample = 1.0
max_concurrency = 64
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-log", action="store_true", help="prediction logging off on both sides")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/shadow.py needs wrk (Debian/Ubuntu: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-shadow-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    body = json.dumps({"inputs": dict(zip(names, data.data[0].tolist(), strict=True))})
    plain = portfolio(work, "", names, "[store]\nlog_predictions = false" if args.no_log else "")
    shadowed = work / "shadowed.toml"
    shadowed.write_text(
        plain.read_text()
        + "".join(CANDIDATES.format(name=n, path=work / "model.joblib") for n in ("cand-a", "cand-b"))
    )
    results: dict[str, list[dict[str, float]]] = {"none": [], "two_candidates": []}
    try:
        for r in range(args.rounds):
            for name, cfg in (("none", plain), ("two_candidates", shadowed)):
                with served(cfg) as base:
                    url = base + "/v1/models/m/predict"
                    wrk(url, body, 8, 2)  # warm up
                    point = wrk(url, body, 32, args.seconds)
                    if name == "two_candidates":
                        with urllib.request.urlopen(base + "/v1/models/m/shadows", timeout=60) as resp:
                            report = json.loads(resp.read())
                        point["mirrored"] = sum(c["mirrored"] for c in report["candidates"])
                        point["dropped"] = sum(c["dropped"] for c in report["candidates"])
                    results[name].append(point)
                    line = f"round {r + 1} {name:15s} {point['rps']:>9.1f} req/s p99 {point['p99_ms']:.3f} ms"
                    print(f"{line}  non-2xx {point['non_2xx']}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: {m: statistics.median(p[m] for p in v) for m in ("rps", "p99_ms")} for k, v in results.items()}
    out = {
        "rounds": results,
        "median": med,
        "throughput_ratio": round(med["two_candidates"]["rps"] / med["none"]["rps"], 3),
        "p99_ratio": round(med["two_candidates"]["p99_ms"] / med["none"]["p99_ms"], 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
