"""What logging every prediction costs, side by side in one run: log off, SQLite, PostgreSQL.

The healthy case of bench/overhead.py (logistic regression, 30 floats a row, compiled CPU tier) under wrk
at concurrency 32 from a second process over loopback. While it runs, /metrics is sampled to show the
in-memory buffer stays bounded; afterwards the rows in the database are counted against the answers.
The last line printed is one JSON object with every figure and the ratios to "off".

    python bench/prediction_log.py [--seconds 10] [--pg postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import joblib
from overhead import portfolio, wrk
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import free_port, wait_http
from failsoft.store import open_store


def sample_buffer(url: str, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        try:
            text = urllib.request.urlopen(url, timeout=1).read().decode()
            m = re.search(r"^failsoft_log_buffered (\S+)$", text, re.M)
            if m:
                out.append(float(m.group(1)))
        except OSError:
            pass
        stop.wait(0.25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="an admin URL; a fresh database is made and dropped",
    )
    args = ap.parse_args()
    import psycopg

    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-log-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    body = json.dumps({"inputs": dict(zip(names, data.data[0].tolist(), strict=True))})
    dbname = f"failsoft_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    pg_url = f"{args.pg.rsplit('/', 1)[0]}/{dbname}"
    cases = {
        "off": "[store]\nlog_predictions = false",
        "sqlite": f'[store]\nurl = "sqlite:///{work / "bench.db"}"',
        "postgres": f'[store]\nurl = "{pg_url}"',
    }
    results: dict[str, Any] = {}
    try:
        for name, store in cases.items():
            port = free_port()
            path = portfolio(work, "", names, store)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "failsoft.cli",
                    "serve",
                    str(path),
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            wait_http(base + "/v2/health/ready", proc)
            warm = wrk(base + "/v1/models/m/predict", body, 8, 2)  # warm up
            stop, buffered = threading.Event(), []
            sampler = threading.Thread(target=sample_buffer, args=(base + "/metrics", stop, buffered))
            sampler.start()
            point = wrk(base + "/v1/models/m/predict", body, 32, args.seconds)
            stop.set()
            sampler.join()
            proc.send_signal(signal.SIGINT)  # a graceful stop flushes the log
            proc.wait(30)
            logged = None
            if name != "off":
                s = open_store(pg_url if name == "postgres" else f"sqlite:///{work / 'bench.db'}")
                logged = s.count_predictions()
                s.close()
            # wrk counts the answers it read; a few more may have been answered as it hung up
            point.update(
                max_buffered=max(buffered, default=0.0),
                logged_rows=logged,
                answers_seen=warm["requests"] + point["requests"],
            )
            results[name] = point
            print(
                f"{name:9s} {point['rps']:>9.1f} req/s  p50 {point['p50_ms']:.3f} ms  "
                f"p99 {point['p99_ms']:.3f} ms  max buffered {point['max_buffered']:.0f}  "
                f"rows logged {logged} of {point['answers_seen']} answers seen",
                file=sys.stderr,
            )
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)
    ratios = {f"{k}/rps_ratio": round(v["rps"] / results["off"]["rps"], 3) for k, v in results.items()}
    verdict = {f"{k}_costs_at_most_10pct": ratios[f"{k}/rps_ratio"] >= 0.9 for k in ("sqlite", "postgres")}
    print(
        json.dumps(
            {
                "concurrency": 32,
                "seconds": args.seconds,
                "results": results,
                "ratios": ratios,
                "verdict": verdict,
            }
        )
    )


if __name__ == "__main__":
    main()
