"""``failsoft serve --workers N`` against ``--workers 1``, the same load, in alternating rounds: throughput
and p99 at concurrency 32 (wrk over loopback), and each worker's resident memory.

The model, row and portfolio are those of bench/overhead.py (the compiled tier, every answer logged to
SQLite). On a machine with as many cores as workers plus one for wrk the ratio approaches N; where wrk and
the workers share the cores (this 2-core machine), it says what the cores left over give.

    python bench/workers.py [--workers 2] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import joblib
import psutil
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from overhead import portfolio, wrk  # noqa: E402

from failsoft.demo.procs import free_port, wait_http  # noqa: E402


def measure(config: Path, workers: int, body: str, seconds: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "failsoft.cli", "serve", str(config), "--port", str(port), "--workers",
         str(workers), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v2/health/ready", proc)
        url = base + "/v1/models/m/predict"
        wrk(url, body, 32, 2)  # warm-up
        figures = wrk(url, body, 32, seconds)
        serving = [p for p in psutil.Process(proc.pid).children() if "--socket-fd" in p.cmdline()] or [
            psutil.Process(proc.pid)
        ]
        figures["rss_mb_per_worker"] = round(statistics.mean(p.memory_info().rss for p in serving) / 2**20)
        return figures
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-workers-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    body = json.dumps({"inputs": dict(zip(names, data.data[0].tolist(), strict=True))})
    config = portfolio(work, "", names)
    rounds: dict[str, list[dict[str, Any]]] = {"1": [], str(args.workers): []}
    for _ in range(args.rounds):
        for n in (1, args.workers):
            rounds[str(n)].append(measure(config, n, body, args.seconds))
            print(n, json.dumps(rounds[str(n)][-1]), file=sys.stderr, flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("rps", "p99_ms")} for k, v in rounds.items()}
    n = str(args.workers)
    print(json.dumps({
        "rounds": rounds,
        "median": med,
        "throughput_ratio": round(med[n]["rps"] / med["1"]["rps"], 3),
        "p99_ratio": round(med[n]["p99_ms"] / med["1"]["p99_ms"], 3),
        "rss_mb_per_worker": rounds[n][-1]["rss_mb_per_worker"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
