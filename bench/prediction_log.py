"""What logging every prediction costs, side by side in one run: log off, SQLite, PostgreSQL.

The healthy case of bench/overhead.py (logistic regression, 30 floats a row, compiled CPU tier) under wrk
at concurrency 32 from a second process over loopback. While it runs, /metrics is sampled to show the
in-memory buffer stays bounded; afterwards the rows in the database are counted against the answers.
The last line printed is one JSON object with every figure and the ratios to "off".

    python bench/prediction_log.py [--seconds 10] [--pg postgresql://postgres@127.0.0.1:5432/test]

"sqlite+journal" is SQLite with the crash journal on ([store] journal = true). ``--crash N`` measures
instead what a kill -9 of the gateway loses, N times with the journal off and on: 8 client threads send
requests with ids for about 4 s, the gateway is killed, started again on the same folder and stopped
cleanly, and the answered ids missing from the log are counted.
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
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import joblib
from overhead import portfolio, wrk
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import free_port, serve_command, wait_http
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


def writer_gone(folder: Path, timeout_s: float = 30.0) -> None:
    """Until the log writer of the gateway killed in ``folder`` has exited: it outlives the gateway, writes
    out what it was sent, then exits (and holds the gateway's port till then)."""
    deadline = time.monotonic() + timeout_s
    while (
        time.monotonic() < deadline
        and subprocess.run(["pgrep", "-f", f"failsoft.store.writer .*{folder}"], capture_output=True).stdout
    ):
        time.sleep(0.1)


def crash_once(work: Path, names: list[str], row: dict[str, float], journal: bool, k: int) -> dict[str, int]:
    """Answered ids lost by one kill -9 under load (8 client threads, about 4 s of traffic)."""
    import http.client

    run = work / f"run-{journal}-{k}"  # a folder of its own: no spill or journal from another run
    run.mkdir()
    shutil.copy(work / "model.joblib", run)
    db = run / "crash.db"
    store = f'[store]\nurl = "sqlite:///{db}"\njournal = {str(journal).lower()}'
    path = portfolio(run, "", names, store)
    port = free_port()
    args = [sys.executable, "-m", "failsoft.cli", "serve", str(path), "--port", str(port)]
    args += ["--log-level", "error"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    answered: list[str] = []
    stop = threading.Event()

    def client(c: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        i = 0
        while not stop.is_set():
            rid = f"c{c}-{i}"
            i += 1
            try:
                conn.request("POST", "/v1/models/m/predict", json.dumps({"id": rid, "inputs": row}))
                r = conn.getresponse()
                r.read()
            except OSError:
                return
            if r.status == 200:
                answered.append(rid)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    time.sleep(4.0 + 0.05 * k)  # past start-up; kills land at different points of the flush window
    proc.kill()
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    writer_gone(run)
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    s = open_store(f"sqlite:///{db}")
    stored = {r[1] for batch in s.iter_predictions() for r in batch}
    s.close()
    return {"answered": len(answered), "lost": len(set(answered) - stored)}


def crash(runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-crash-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    row = dict(zip(names, data.data[0].tolist(), strict=True))
    out: dict[str, list[dict[str, int]]] = {"off": [], "journal": []}
    try:
        for k in range(runs):
            for journal in (False, True):
                got = crash_once(work, names, row, journal, k)
                out["journal" if journal else "off"].append(got)
                print(f"journal {'on ' if journal else 'off'}: {got['lost']} of {got['answered']} answered "
                      "records lost", file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"kills": runs, "results": out}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--crash", type=int, default=0, metavar="N", help="measure kill -9 losses N times")
    ap.add_argument(
        "--pg",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="an admin URL; a fresh database is made and dropped",
    )
    args = ap.parse_args()
    if args.crash:
        crash(args.crash)
        return
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
        "sqlite+journal": f'[store]\nurl = "sqlite:///{work / "journal.db"}"\njournal = true',
        "postgres": f'[store]\nurl = "{pg_url}"',
    }
    results: dict[str, Any] = {}
    try:
        for name, store in cases.items():
            port = free_port()
            path = portfolio(work, "", names, store)
            proc = subprocess.Popen(
                serve_command(path, port),
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
                db = {"postgres": pg_url, "sqlite": f"sqlite:///{work / 'bench.db'}"}.get(
                    name, f"sqlite:///{work / 'journal.db'}"
                )
                s = open_store(db)
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
