"""The prediction log on NATS JetStream, side by side with the databases, in one run (a private
nats-server on a free loopback port, this machine's PostgreSQL in a fresh database, SQLite):

1. **rates**: records a second one log writer publishes and has acknowledged (stream) or commits
   (PostgreSQL, SQLite), fed batches as a serving process sends them (8 of 125 records a call), rounds
   interleaved, medians.
2. **latency**: wrk (c=4, below saturation) against a gateway logging to SQLite and one logging to the
   stream, rounds alternating which goes first: the median p99 each, and the difference.
3. **broker** and **lander**: two writer processes publishing at once; `failsoft log land` landing a
   stream of 400,000 records.
4. **faults**, in one run under load (8 client threads, ids on every request; journal on; a lander
   running with a 0.3 s flush): the lander killed with kill -9 every few seconds and started again, the
   broker stopped for ``--outage-s`` (default 30) and started, then the gateway killed with kill -9 and
   started again; at the end a last lander run. Counted: answers and non-2xx, ids answered, ids in the
   stream (total and distinct), rows in the lake (total and distinct).

The last line printed is one JSON object.

    python bench/stream.py [--seconds 4] [--rounds 3] [--outage-s 30]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import joblib
import msgspec
import psycopg
from overhead import portfolio, wrk
from prediction_log import writer_gone
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from failsoft.demo.procs import free_port, serve_command, wait_http
from failsoft.store import open_log
from failsoft.store.lake_read import LakeLog
from tests.natsserver import NatsServer
from tests.store.test_stream import stream_events

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def payloads(prefix: str) -> list[bytes]:
    """One call's worth: 8 batches of 125 records, as the serving process encodes them."""
    out = []
    for j in range(8):
        base = j * 125 + 1
        rows = [[None, f"{prefix}-r{base + i}", "churn", "7", "cpu", "live", False, None, [0.42], None, 1.2,
                 time.time()] for i in range(125)]  # fmt: skip
        out.append(msgspec.json.encode({"prefix": prefix, "base": base, "rows": rows}))
    return out


def rate(url: str, seconds: float) -> float:
    sink = open_log(url, {"retention_s": 86400.0})
    connect = getattr(sink, "connect", None)
    if connect:
        connect()
    pool = [payloads(uuid.uuid4().hex[:12]) for _ in range(int(seconds * 200))]  # more than it can take
    done, start = 0, time.monotonic()
    for group in pool:
        done += sink.insert_json(*group)
        if time.monotonic() - start >= seconds:
            break
    elapsed = time.monotonic() - start
    sink.close()
    return done / elapsed


def rates(work: Path, nats_url: str, seconds: float, rounds: int) -> dict[str, Any]:
    name = f"failsoft_bench_stream_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    urls = {"stream": nats_url, "postgres": f"{ADMIN.rsplit('/', 1)[0]}/{name}",
            "sqlite": f"sqlite:///{work / 'rate.db'}"}  # fmt: skip
    got: dict[str, list[float]] = {k: [] for k in urls}
    try:
        for r in range(rounds):
            order = list(urls)[r % 3 :] + list(urls)[: r % 3]
            for k in order:
                got[k].append(rate(urls[k], seconds))
                print(f"round {r + 1}: {k:8s} {got[k][-1]:>9,.0f} records/s", file=sys.stderr)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    med = {k: round(statistics.median(v)) for k, v in got.items()}
    return {"records_per_s": med, "stream_vs_postgres": round(med["stream"] / med["postgres"], 2),
            "stream_vs_sqlite": round(med["stream"] / med["sqlite"], 2), "rounds": got}  # fmt: skip


def broker(url: str, seconds: float) -> dict[str, Any]:
    """Two log writers (processes) publishing at once: what the broker takes from more than one."""
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        both = pool.starmap(rate, [(url, seconds), (url, seconds)])
    return {"writers": 2, "records_per_s": round(sum(both))}


def lander_rate(work: Path, url: str, records: int = 400_000) -> dict[str, Any]:
    """Records a second `failsoft log land` lands (Parquet, fsynced) from a stream already full."""
    from failsoft.store.lake import run_land

    sink = open_log(url, {"retention_s": 86400.0})
    for _ in range(records // 1000):
        sink.insert_json(*payloads(uuid.uuid4().hex[:12]))
    sink.close()
    start = time.monotonic()
    lake = run_land(url, work / "lake-rate", "FAILSOFT_PREDICTIONS", "failsoft.predictions", until_idle_s=1.0)
    seconds = time.monotonic() - start - 1.0  # (the idle second that ends it)
    return {
        "records": lake.landed,
        "seconds": round(seconds, 2),
        "records_per_s": round(lake.landed / seconds),
    }


def gateway(work: Path, names: list[str], store: str, tag: str) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    folder = work / tag
    folder.mkdir(exist_ok=True)
    shutil.copy(work / "model.joblib", folder)
    path = portfolio(folder, "", names, store)
    proc = subprocess.Popen(serve_command(path, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    return proc, port, path


def latency(
    work: Path, names: list[str], body: str, nats_url: str, seconds: int, rounds: int
) -> dict[str, Any]:
    cases = {"sqlite": "", "stream": f'[store]\nlog = "{nats_url}"'}
    out: dict[str, Any] = {}
    for rnd in range(rounds):
        for name, store in cases.items() if rnd % 2 == 0 else reversed(cases.items()):
            proc, port, _ = gateway(work, names, store, f"lat-{name}-{rnd}")
            url = f"http://127.0.0.1:{port}/v1/models/m/predict"
            wrk(url, body, 4, 2)
            point = wrk(url, body, 4, seconds)
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
            out.setdefault(name, []).append(point)
            print(f"{name:7s} p50 {point['p50_ms']:.3f} ms  p99 {point['p99_ms']:.3f} ms  {point['rps']:.0f} "
                  "req/s", file=sys.stderr)  # fmt: skip
    p99 = {k: statistics.median(p["p99_ms"] for p in v) for k, v in out.items()}
    return {"p99_ms": p99, "added_p99_ms": round(p99["stream"] - p99["sqlite"], 3), "runs": out}


def lander(toml: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "failsoft.cli", "log", "land", "--portfolio", str(toml), "--flush-s", "0.3",
            "--quiet"]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def faults(work: Path, names: list[str], row: dict[str, float], outage_s: float) -> dict[str, Any]:
    server = NatsServer(work / "nats-faults").start()  # a stream of its own: only this run's answers
    try:
        return _faults(work, names, row, server, outage_s)
    finally:
        server.stop()


def _faults(
    work: Path, names: list[str], row: dict[str, float], server: NatsServer, outage_s: float
) -> dict[str, Any]:
    lake = work / "lake"
    store = f'[store]\nlog = "{server.url}"\nlake = "{lake}"\njournal = true'
    proc, port, toml = gateway(work, names, store, "faults")
    answered: list[str] = []
    non_2xx = [0]
    stop = threading.Event()

    def client(c: int) -> None:
        i = 0
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while not stop.is_set():
            rid = f"c{c}-{i}"
            i += 1
            try:
                conn.request("POST", "/v1/models/m/predict", json.dumps({"id": rid, "inputs": row}))
                r = conn.getresponse()
                r.read()
            except OSError:  # the gateway was killed: a new connection once it is back
                conn.close()
                time.sleep(0.05)
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                continue
            if r.status == 200:
                answered.append(rid)
            else:
                non_2xx[0] += 1
            time.sleep(0.002)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(8)]
    for t in threads:
        t.start()
    land = lander(toml)
    kills = {"lander": 0, "gateway": 0}

    def wait(seconds: float) -> None:
        nonlocal land
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(2.7, max(0.0, end - time.monotonic())))
            land.kill()  # kill -9, wherever it is in its flush
            land.wait()
            kills["lander"] += 1
            land = lander(toml)

    wait(6)
    server.stop()
    print(f"broker stopped for {outage_s:.0f} s", file=sys.stderr)
    during = len(answered)
    wait(outage_s)
    answered_during = len(answered) - during
    server.start()
    wait(6)
    proc.kill()  # the gateway, kill -9
    proc.wait()
    kills["gateway"] += 1
    writer_gone(work / "faults", 60)
    with (work / "restart.log").open("wb") as said:
        proc = subprocess.Popen(serve_command(toml, port), stdout=said, stderr=said)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    except RuntimeError:
        print((work / "restart.log").read_text()[-3000:], file=sys.stderr)
        raise
    wait(6)
    stop.set()
    for t in threads:
        t.join()
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    land.kill()
    land.wait()
    final = subprocess.run([sys.executable, "-m", "failsoft.cli", "log", "land", "--portfolio", str(toml),
                            "--until-idle", "3", "--quiet"], capture_output=True, text=True)  # fmt: skip
    assert final.returncode == 0, final.stderr
    in_stream = [e["data"]["request_id"] for e in stream_events(server.url)]
    rows = LakeLog(lake).execute("SELECT count(*), count(DISTINCT record_id), count(DISTINCT request_id) "
                                 "FROM predictions")[0]  # fmt: skip
    got = {
        "answered": len(answered), "answered_during_outage": answered_during, "non_2xx": non_2xx[0],
        "stream_ids": len(in_stream), "stream_distinct_ids": len(set(in_stream)),
        "lake_rows": rows[0], "lake_distinct_records": rows[1], "lake_distinct_requests": rows[2],
        "answered_missing_from_stream": len(set(answered) - set(in_stream)), "kills": kills,
        "outage_s": outage_s,
    }  # fmt: skip
    once = got["stream_ids"] == got["stream_distinct_ids"] == len(set(answered))
    landed = got["lake_rows"] == got["lake_distinct_records"] == len(set(answered))
    got["exactly_once"] = got["answered_missing_from_stream"] == 0 and once and landed
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--outage-s", type=float, default=30.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-stream-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    row = dict(zip(names, data.data[0].tolist(), strict=True))
    body = json.dumps({"inputs": row})
    results: dict[str, Any] = {}
    try:
        # a server of its own for each part: the gigabytes the rates leave behind do not weigh on the next
        for part in ("rates", "broker", "lander", "latency"):
            server = NatsServer(work / f"nats-{part}").start()
            try:
                if part == "rates":
                    results[part] = rates(work, server.url, args.seconds, args.rounds)
                elif part == "broker":
                    results[part] = broker(server.url, args.seconds)
                elif part == "lander":
                    results[part] = lander_rate(work, server.url)
                else:
                    results[part] = latency(work, names, body, server.url, int(args.seconds * 2), args.rounds)
                print(f"{part}: {json.dumps(results[part])[:300]}", file=sys.stderr)
            finally:
                server.stop()
                shutil.rmtree(work / f"nats-{part}", ignore_errors=True)
        results["faults"] = faults(work, names, row, args.outage_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
