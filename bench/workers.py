"""``failsoft serve --workers N`` against ``--workers 1``, the same load, in alternating rounds: throughput,
p99 at concurrency 32 (wrk over loopback), CPU per request (every process of the server: supervisor,
workers, log writers) and each worker's resident memory; N workers with their one shared log writer (the
default) and with a log writer each (``--log-writer per-worker``).

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

from overhead import Served, portfolio, wrk_cpu  # noqa: E402

from failsoft.demo.procs import free_port, wait_http  # noqa: E402


def measure(config: Path, how: list[str], body: str, seconds: int) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "failsoft.cli", "serve", str(config), "--port", str(port), *how,
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v2/health/ready", proc)
        url = base + "/v1/models/m/predict"
        gw = Served(base, proc.pid)
        wrk_cpu(gw, url, body, 32, 2)  # warm-up
        figures = wrk_cpu(gw, url, body, 32, seconds)
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
    n = str(args.workers)
    ways = {
        "1": ["--workers", "1"],
        n: ["--workers", n],
        f"{n}-per-worker": ["--workers", n, "--log-writer", "per-worker"],
    }
    rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for name, how in ways.items():
            rounds[name].append(measure(config, how, body, args.seconds))
            print(name, json.dumps(rounds[name][-1]), file=sys.stderr, flush=True)
    figures = ("rps", "p99_ms", "cpu_us")
    med = {k: {m: statistics.median(r[m] for r in v) for m in figures} for k, v in rounds.items()}

    def ratios(a: str, b: str) -> dict[str, float]:
        return {
            "throughput_ratio": round(med[a]["rps"] / med[b]["rps"], 3),
            "p99_ratio": round(med[a]["p99_ms"] / med[b]["p99_ms"], 3),
            "cpu_per_request_ratio": round(med[a]["cpu_us"] / med[b]["cpu_us"], 3),
        }

    print(json.dumps({
        "rounds": rounds,
        "median": med,
        f"{n}_vs_1": ratios(n, "1"),
        f"{n}-per-worker_vs_1": ratios(f"{n}-per-worker", "1"),
        "shared_vs_per-worker": ratios(n, f"{n}-per-worker"),
        "rss_mb_per_worker": rounds[n][-1]["rss_mb_per_worker"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
