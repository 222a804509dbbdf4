"""What process isolation (run = "process") costs per call, side by side with the same model in threads.

Two models in one portfolio run: a Python function of one row (tests.helpers:score) and a scikit-learn
logistic regression on 30 floats with compiling off (so both run as they are). Each is called N times in
a row through Portfolio.predict (no HTTP), one configuration after the other, alternating for --rounds;
the figures are the medians of the per-call mean latency (µs) and their ratio, process / thread.

    python bench/isolation.py [--calls 3000] [--rounds 3]      (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from failsoft import Portfolio


def toml(work: Path, run: str, names: list[str]) -> str:
    inputs = "".join(f'[[models.lr.inputs]]\nname = "{n}"\n' for n in names)
    return f"""
trusted_model_dirs = ["{work}"]
data_dir = "{work / "state"}"
[store]
log_predictions = false
[models.fn]
deadline_ms = 1000
[[models.fn.inputs]]
name = "x"
[[models.fn.tiers]]
name = "t"
kind = "python"
target = "tests.helpers:score"
run = "{run}"
timeout_ms = 1000
[[models.fn.tiers]]
kind = "default"
value = 0.5
[models.lr]
deadline_ms = 1000
{inputs}
[[models.lr.tiers]]
name = "t"
kind = "python"
path = "{work / "lr.joblib"}"
compile = false
run = "{run}"
timeout_ms = 1000
[[models.lr.tiers]]
kind = "default"
value = 0.5
"""


async def measure(path: Path, rows: dict[str, dict[str, float]], calls: int) -> dict[str, float]:
    out = {}
    async with Portfolio.from_toml(path) as p:
        for model, row in rows.items():
            for _ in range(50):  # warm up
                await p.predict(model, row)
            t = time.perf_counter()
            for _ in range(calls):
                o = await p.predict(model, row)
            out[model] = (time.perf_counter() - t) / calls * 1e6
            assert o.tier == "t", o
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-iso-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "lr.joblib")
    rows = {"fn": {"x": 3.0}, "lr": dict(zip(names, data.data[0].tolist(), strict=True))}
    paths = {}
    for run in ("thread", "process"):
        paths[run] = work / f"{run}.toml"
        paths[run].write_text(toml(work, run, names))
    got: dict[str, dict[str, list[float]]] = {"thread": {"fn": [], "lr": []}, "process": {"fn": [], "lr": []}}
    for k in range(args.rounds):
        for run in ("thread", "process") if k % 2 == 0 else ("process", "thread"):
            for model, us in asyncio.run(measure(paths[run], rows, args.calls)).items():
                got[run][model].append(us)
    result = {}
    for model in ("fn", "lr"):
        thread, process = (statistics.median(got[r][model]) for r in ("thread", "process"))
        result[model] = {"thread_us": round(thread, 1), "process_us": round(process, 1),
                         "ratio": round(process / thread, 2)}  # fmt: skip
        print(f"{model}: thread {thread:.1f} µs a call, process {process:.1f} µs ({process / thread:.2f}x)",
              file=sys.stderr)  # fmt: skip
    print(json.dumps({"calls": args.calls, "rounds": args.rounds, "results": result}))


if __name__ == "__main__":
    main()
