"""Twenty seconds of mixed abuse beside healthy traffic, against a real `failsoft serve` over loopback.

At the same time, for --seconds:
- healthy traffic: --clients threads posting valid rows to a compiled model (deadline 60 ms), each request
  with an id;
- fuzzed bodies: one thread posting malformed, deep, NaN-laden, surrogate-holding, huge-number and
  mis-shaped bodies to predict and infer (JSON and binary tensors), and odd paths;
- big tensors: one thread posting ~1 MB INT8 binary tensors (a million rows) back to back;
- slow connections: --slow connections that send a request head one byte a second (reopened when cut);
- a spinning model: threads calling a model stuck in pure Python, isolated with run = "process".
Then the gateway is stopped cleanly and the prediction log is read.

Reported: healthy p50/p99 as the gateway measured them (each answer's latency_ms) and as the clients saw
them, 5xx count (must be 0), statuses by client, the guard's refusals, and log rows against the 200
answers given on the data plane (must be equal). The last line is one JSON object.

    python bench/abuse.py [--seconds 20] [--slow 1000] [--clients 4]      (from the repository root)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import multiprocessing
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import free_port, wait_http
from failsoft.store import open_store

DEADLINE_MS = 60


def portfolio(work: Path, names: list[str]) -> Path:
    inputs = "".join(f'[[models.healthy.inputs]]\nname = "{n}"\n' for n in names)
    text = f"""
trusted_model_dirs = ["{work}"]
data_dir = "{work / "state"}"
[models.healthy]
deadline_ms = {DEADLINE_MS}
{inputs}
[models.healthy.output]
type = "float"
min = 0
max = 1
[[models.healthy.tiers]]
name = "lr"
kind = "python"
path = "{work / "model.joblib"}"
[[models.healthy.tiers]]
kind = "default"
value = 0.5

[models.spinny]
deadline_ms = {DEADLINE_MS}
[[models.spinny.inputs]]
name = "x"
[[models.spinny.tiers]]
name = "stuck"
kind = "python"
target = "tests.helpers:spin"
run = "process"
processes = 2
timeout_ms = 40
[[models.spinny.tiers]]
kind = "default"
value = 0.5
"""
    path = work / "portfolio.toml"
    path.write_text(text)
    return path


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        self.answers = 0  # 200s on the data plane: each is one log row
        self.gateway_ms: list[float] = []
        self.client_ms: list[float] = []
        self.errors: collections.Counter[str] = collections.Counter()

    def add(self, who: str, status: int, data_plane: bool) -> None:
        with self.lock:
            self.statuses[who][status] += 1
            if status == 200 and data_plane:
                self.answers += 1


PREDICT, INFER = "/v1/models/healthy/predict", "/v2/models/healthy/infer"
JSON = {"content-type": "application/json"}


class Client:
    """One keep-alive connection that counts its answers and reconnects after an error."""

    def __init__(self, port: int, who: str, tally: Tally) -> None:
        self.port, self.who, self.tally = port, who, tally
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def send(
        self, method: str, path: str, body: bytes, headers: dict[str, str], data_plane: bool
    ) -> tuple[int, bytes] | None:
        try:
            self.conn.request(method, path, body or None, headers)
            r = self.conn.getresponse()
            status, raw = r.status, r.read()
        except OSError as err:
            self.tally.errors[f"{self.who}: {type(err).__name__}"] += 1
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            return None
        self.tally.add(self.who, status, data_plane)
        return status, raw


def healthy(port: int, row: dict[str, float], stop: threading.Event, tally: Tally, k: int) -> None:
    client = Client(port, "healthy", tally)
    i = 0
    while not stop.is_set():
        body = json.dumps({"id": f"h{k}-{i}", "inputs": row}).encode()
        i += 1
        t = time.perf_counter()
        got = client.send("POST", PREDICT, body, JSON, True)
        elapsed = (time.perf_counter() - t) * 1000
        if got is None:
            continue
        status, raw = got
        if status == 200:
            doc = json.loads(raw)
            with tally.lock:
                tally.gateway_ms.append(doc["latency_ms"])
                tally.client_ms.append(elapsed)


def fuzzed(rng: random.Random, names: list[str]) -> tuple[str, bytes, dict[str, str]]:
    """One hostile request: (path, body, headers)."""
    pick = rng.randrange(12)
    row: dict[str, Any] = {n: rng.random() for n in names}
    if pick == 0:
        n = rng.randrange(1, 5000)
        return PREDICT, b'{"inputs": ' + b"[" * n + b"]" * n + b"}", JSON
    if pick == 1:
        return PREDICT, bytes(rng.randrange(256) for _ in range(rng.randrange(300))), JSON
    if pick == 2:
        row[names[0]] = float("nan")
        return PREDICT, json.dumps({"inputs": row, "id": "\ud800"}).encode(), JSON
    if pick == 3:
        return PREDICT, b'{"id": "\\u0000", "inputs": ' + json.dumps(row).encode() + b"}", JSON
    if pick == 4:
        row[names[1]] = 10**400
        return PREDICT, json.dumps({"inputs": row}).encode(), JSON
    if pick == 5:
        return PREDICT, json.dumps({"inputs": [row] * rng.randrange(1000, 3000)}).encode(), JSON
    if pick == 6:
        shape = [rng.randrange(-2, 5), rng.randrange(0, 40)]
        tensor = {"name": "input", "shape": shape, "datatype": "FP64", "data": [0.5] * rng.randrange(100)}
        return INFER, json.dumps({"inputs": [tensor]}).encode(), JSON
    if pick == 7:
        nan = b'{"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": [NaN]}]}'
        return INFER, nan, JSON
    if pick == 8:
        return f"/v1/audits/{rng.choice(['99999999999999999999999', '%C2%B2', '-1'])}", b"", {}
    if pick == 9:
        return "/v1/models/x%2Fpredict", json.dumps({"inputs": row}).encode(), JSON
    if pick == 10:
        return PREDICT, json.dumps({"inputs": row, "id": "x" * 400}).encode(), JSON
    return PREDICT, json.dumps({"inputs": row}).encode()[: rng.randrange(40)], JSON


def fuzzer(port: int, names: list[str], stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(1202)
    client = Client(port, "fuzz", tally)
    while not stop.is_set():
        path, body, headers = fuzzed(rng, names)
        data_plane = path.endswith(("/predict", "/infer")) and "%2F" not in path
        client.send("POST" if headers else "GET", path, body, headers, data_plane)


def big_tensors(port: int, stop: threading.Event, tally: Tally) -> None:
    n = 1_000_000
    header = json.dumps({"inputs": [{"name": "input", "shape": [n, 1], "datatype": "INT8",
                                     "parameters": {"binary_data_size": n}}]}).encode()  # fmt: skip
    body = header + bytes(n)
    headers = {"inference-header-content-length": str(len(header))}
    client = Client(port, "tensor", tally)
    while not stop.is_set():
        client.send("POST", INFER, body, headers, True)


def spinner(port: int, stop: threading.Event, tally: Tally) -> None:
    client = Client(port, "spin", tally)
    while not stop.is_set():
        client.send("POST", "/v1/models/spinny/predict", b'{"inputs": {"x": 9}}', JSON, True)


def slow_connections(port: int, count: int, stop: threading.Event, tally: Tally) -> None:
    async def one(k: int) -> None:
        await asyncio.sleep(k * 0.002)
        head = b"POST /v1/models/healthy/predict HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100_000
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                tally.errors["slow: connect"] += 1
                await asyncio.sleep(0.5)
                continue
            try:
                for byte in head:
                    if stop.is_set() or reader.at_eof():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        answer = await asyncio.wait_for(reader.read(200), 1.0)
                    except TimeoutError:
                        continue
                    if answer:
                        m = re.match(rb"HTTP/1.1 (\d+)", answer)
                        tally.add("slow", int(m.group(1)) if m else 0, False)
                    break
            except OSError:
                pass
            finally:
                writer.close()

    async def run() -> None:
        await asyncio.gather(*(one(k) for k in range(count)))

    asyncio.run(run())


def attacker(kind: str, port: int, names: list[str], seconds: float, slow: int, out: Any) -> None:
    """The fuzzer, the big tensors or the slow connections in a process of their own, so the healthy
    clients' own latency is not their interpreter lock's."""
    stop, tally = threading.Event(), Tally()
    threading.Timer(seconds, stop.set).start()
    if kind == "fuzz":
        fuzzer(port, names, stop, tally)
    elif kind == "tensor":
        big_tensors(port, stop, tally)
    else:
        slow_connections(port, slow, stop, tally)
    out.put((dict(tally.statuses), tally.answers, dict(tally.errors)))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--slow", type=int, default=1000, help="slow connections held open (default 1000)")
    ap.add_argument("--clients", type=int, default=4, help="healthy client threads (default 4)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-abuse-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    row = dict(zip(names, data.data[0].tolist(), strict=True))
    port = free_port()
    log = (work / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "failsoft.cli", "serve", str(portfolio(work, names)), "--port", str(port),
         "--log-level", "warning"], stdout=log, stderr=log,
    )  # fmt: skip
    tally = Tally()
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        stop = threading.Event()
        threads = [
            threading.Thread(target=healthy, args=(port, row, stop, tally, k)) for k in range(args.clients)
        ]
        threads += [threading.Thread(target=spinner, args=(port, stop, tally)) for _ in range(2)]
        results: Any = multiprocessing.Queue()
        attackers = [
            multiprocessing.Process(target=attacker, args=(k, port, names, args.seconds, args.slow, results))
            for k in ("fuzz", "tensor", "slow")
        ]
        for worker in [*threads, *attackers]:
            worker.start()
        time.sleep(args.seconds)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        stop.set()
        for t in threads:
            t.join(30)
        for _ in attackers:
            statuses, answers, errors = results.get(timeout=60)
            for who, counts in statuses.items():
                tally.statuses[who].update(counts)
            tally.answers += answers
            tally.errors.update(errors)
        for a in attackers:
            a.join(30)
        proc.send_signal(signal.SIGINT)  # a clean stop writes out the log
        proc.wait(60)
        store = open_store(f"sqlite:///{work / 'state' / 'failsoft.db'}")
        rows = store.count_predictions()
        store.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    refused = dict(re.findall(r'failsoft_connections_refused_total\{status="(\d+)"\} (\S+)', metrics))
    five_xx = sum(c for counts in tally.statuses.values() for s, c in counts.items() if s >= 500)
    result = {
        "seconds": args.seconds,
        "healthy_answers": len(tally.gateway_ms),
        "healthy_gateway_ms": {"p50": round(percentile(tally.gateway_ms, 50), 3),
                               "p99": round(percentile(tally.gateway_ms, 99), 3),
                               "max": round(max(tally.gateway_ms, default=float("nan")), 3)},
        "healthy_client_ms": {"p50": round(percentile(tally.client_ms, 50), 3),
                              "p99": round(percentile(tally.client_ms, 99), 3)},
        "deadline_ms": DEADLINE_MS,
        "5xx": five_xx,
        "statuses": {who: dict(sorted(c.items())) for who, c in tally.statuses.items()},
        "client_errors": dict(tally.errors),
        "refused_by_guard": {k: float(v) for k, v in refused.items()},
        "answers_200": tally.answers,
        "log_rows": rows,
        "verdict": {
            "healthy_p99_within_deadline": percentile(tally.gateway_ms, 99) < DEADLINE_MS,
            "no_5xx": five_xx == 0,
            "log_rows_equal_answers": rows == tally.answers,
        },
    }  # fmt: skip
    print(json.dumps(result, indent=1), file=sys.stderr)
    print(json.dumps(result))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
