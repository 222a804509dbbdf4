"""Offline drift on 1M rows x 10 columns: ``failsoft drift`` side by side with Evidently's DataDriftPreset
and NannyML's univariate drift calculator, on the same generated Parquet files, in one run.

The data: a reference and an analysis file of ``--rows`` rows each, 8 numeric columns (normal, skewed,
integer counts) and 2 categorical ones; two columns drift in the analysis file's second half. Each tool runs
in a process of its own; the time is its computation only (imports and reading the files into pandas are
left out for the baselines; failsoft's time *includes* reading the analysis Parquet file). failsoft is
timed twice: building the reference profile from the reference file (once per model, kept), and judging the
analysis file chunk by chunk. NannyML gets the same chunk size; Evidently compares the two files whole.

    python bench/drift.py [--rows 1000000] [--chunk-size 100000]
        [--evidently-python PATH] [--nannyml-python PATH]

A baseline whose Python cannot import it is skipped (Evidently needs pandas < 3; a separate virtual
environment is the easy way: ``python -m venv ev && ev/bin/pip install evidently "pandas<3" pyarrow``).
The last line printed is one JSON object with the times and the ratios (failsoft / baseline).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUMERIC = [f"n{i}" for i in range(8)]
CATEGORICAL = ["plan", "country"]

EVIDENTLY = """
import sys, time, json
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
t = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
doc = snapshot.dict()
seconds = time.perf_counter() - t
drifted = doc["metrics"][0]["value"]["count"]
print(json.dumps({"seconds": seconds, "drifted_columns": drifted}))
"""

NANNYML = """
import os, sys, time, json
os.environ["NML_DISABLE_USAGE_LOGGING"] = "1"
import pandas as pd
import nannyml as nml
ref, cur = pd.read_parquet(sys.argv[1]), pd.read_parquet(sys.argv[2])
t = time.perf_counter()
calc = nml.UnivariateDriftCalculator(column_names=list(ref.columns), chunk_size=int(sys.argv[3]),
    continuous_methods=["kolmogorov_smirnov"], categorical_methods=["chi2"])
result = calc.fit(ref).calculate(cur).filter(period="analysis").to_df()
seconds = time.perf_counter() - t
alerts = [c for c in result.columns if c[-1] == "alert"]
print(json.dumps({"seconds": seconds, "chunks_with_alerts": int(result[alerts].any(axis=1).sum())}))
"""


def make(path: Path, n: int, seed: int, drift: bool) -> None:
    rng = np.random.default_rng(seed)
    cols = {
        "n0": rng.normal(0, 1, n),
        "n1": rng.normal(50, 10, n),
        "n2": rng.lognormal(3, 1, n),
        "n3": rng.exponential(2, n),
        "n4": rng.poisson(3, n).astype(np.float64),
        "n5": rng.integers(0, 100, n).astype(np.float64),
        "n6": rng.gamma(2, 2, n),
        "n7": rng.uniform(0, 1, n),
    }
    plan = rng.choice(["free", "pro", "team", "enterprise", "edu"], n, p=[0.5, 0.25, 0.15, 0.07, 0.03])
    country = rng.choice([f"c{i:02d}" for i in range(20)], n)
    if drift:
        half = n // 2
        cols["n1"][half:] += 6.0
        plans = ["free", "pro", "team", "enterprise", "edu"]
        plan[half:] = rng.choice(plans, n - half, p=[0.3, 0.3, 0.3, 0.05, 0.05])
    table = pa.table({**cols, "plan": plan, "country": country})
    pq.write_table(table, path)


def baseline(python: str, script: str, *args: str) -> dict[str, float] | None:
    proc = subprocess.run([python, "-c", script, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"skipped ({python}): {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def failsoft_times(ref: Path, cur: Path, chunk: int) -> dict[str, float]:
    script = f"""
import json, time
from failsoft.config import DriftSpec
from failsoft.monitor.offline import drift_file, profile_file
t = time.perf_counter()
profile = profile_file({str(ref)!r}, None)
built = time.perf_counter() - t
t = time.perf_counter()
report = drift_file(profile, {str(cur)!r}, {chunk}, DriftSpec())
seconds = time.perf_counter() - t
print(json.dumps({{"profile_seconds": built, "seconds": seconds, "drifted_chunks": report["drifted_chunks"],
                  "drifted": sorted({{f for c in report["chunks"] for f in c["drifted"]}})}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--chunk-size", type=int, default=100_000)
    ap.add_argument("--evidently-python", default=sys.executable)
    ap.add_argument("--nannyml-python", default=sys.executable)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-drift-"))
    ref, cur = work / "reference.parquet", work / "analysis.parquet"
    make(ref, args.rows, 1, drift=False)
    make(cur, args.rows, 2, drift=True)
    print(f"data: {args.rows} rows x 10 columns in {work}", file=sys.stderr)
    out: dict[str, object] = {"rows": args.rows, "columns": 10, "chunk_size": args.chunk_size}
    fs = failsoft_times(ref, cur, args.chunk_size)
    out["failsoft"] = fs
    print(f"failsoft: profile {fs['profile_seconds']:.2f} s, drift {fs['seconds']:.2f} s, "
          f"drifted {fs['drifted']}", file=sys.stderr)  # fmt: skip
    for name, python, script, extra in (
        ("nannyml", args.nannyml_python, NANNYML, [str(args.chunk_size)]),
        ("evidently", args.evidently_python, EVIDENTLY, []),
    ):
        res = baseline(python, script, str(ref), str(cur), *extra)
        if res is None:
            continue
        out[name] = res
        out[f"ratio_vs_{name}"] = round(fs["seconds"] / res["seconds"], 3)
        both = fs["seconds"] + fs["profile_seconds"]
        out[f"ratio_vs_{name}_with_profile"] = round(both / res["seconds"], 3)
        print(f"{name}: {res['seconds']:.2f} s -> failsoft/{name} {out[f'ratio_vs_{name}']}", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all)", file=sys.stderr)
