"""Instructions per request, counted by valgrind's callgrind: repeatable where wall-clock figures wander
10-30% between identical runs, so a change that costs 10% shows in review.

Each server runs under ``valgrind --tool=callgrind`` (the serving process only: failsoft's log writer
is a process of its own, uncounted), gets ``--warmup`` requests, then its counters are dumped and zeroed
(``callgrind_control --dump``), ``--requests`` requests are sent one after another from outside valgrind,
and the second dump's total instructions (Ir) divided by the requests is the figure. The process is then
left alone as long as the requests took and dumped a third time: what its timers and threads spend with
no request at all (under valgrind, time runs ~50x slower, so that share is inflated), shown beside.
Cases: (a) a bare ASGI app calling predict_proba (bench/bare_app.py), (b) failsoft healthy (the compiled
tier), (c) failsoft with the primary's breaker open, (e) failsoft answering a corrupt row (invalid_input),
(m) failsoft healthy and monitored (bench/monitor.py's profile; at valgrind's pace every request goes into
the window, the most the request path can pay; judging is a process of its own, uncounted), (s) failsoft
healthy mirroring every request to two shadow candidates (bench/shadow.py's; requests one at a time, so
each copy is a shadow call of its own, the most a copy can cost), (S) the same with the shadow linger
scaled to valgrind's pace (``linger_ms`` 250 for 5: under valgrind a request takes ~2 ms, so with 5 ms a
pile holds a few requests, where at full speed it holds a hundred or more; use with ``--clients``); the
same model and 30-float row as
bench/overhead.py. Slow (each server starts under valgrind): a few minutes. ``--clients N`` sends the
requests from N connections at once rather than one after another: what batching does (the shadow
candidates' calls then hold many requests each, as under load; compare (s) with (b) both so sent).

    python bench/instructions.py [--requests 500] [--cases a,b,c,e,m,s] [--clients 1]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from monitor import MONITOR, write_profile  # noqa: E402
from overhead import portfolio  # noqa: E402
from shadow import CANDIDATES  # noqa: E402

from failsoft.demo.procs import free_port, wait_http  # noqa: E402

# How many times slower than at full speed a request runs under callgrind (about; for case S).
VALGRIND_PACE = 50


def totals(path: Path) -> int:
    m = re.search(r"^(?:totals|summary):\s+(\d+)", path.read_text(), re.M)
    assert m, f"no totals in {path}"
    return int(m.group(1))


def measure(
    args: list[str],
    ready: str,
    path: str,
    body: bytes,
    warmup: int,
    requests: int,
    out: Path,
    clients: int = 1,
) -> dict[str, float]:
    """``args`` with ``{port}`` filled in, under callgrind; instructions per request on ``path``."""
    port = free_port()
    out.mkdir(parents=True, exist_ok=True)
    filled = [a.replace("{port}", str(port)) for a in args]
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p", *filled]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready}", proc, timeout_s=900)
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=600) for _ in range(clients)]
        headers = {"Content-Type": "application/json"}

        def ask(conn: http.client.HTTPConnection, n: int) -> None:
            for _ in range(n):
                conn.request("POST", path, body, headers)
                reply = conn.getresponse()
                reply.read()
                assert reply.status == 200, reply.status

        def send(n: int) -> int:
            """``n`` requests (rounded down to a multiple of the clients); how many were sent."""
            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                for done in [pool.submit(ask, c, n // clients) for c in conns]:
                    done.result()
            return n // clients * clients

        def dump() -> int:
            """The instructions since the last dump."""
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
            dumps = sorted(out.glob(f"cg.{proc.pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
            return totals(dumps[-1])

        send(warmup)
        dump()
        t0 = time.perf_counter()
        requests = send(requests)
        took = time.perf_counter() - t0
        instructions = dump()
        # the same process left alone as long: what its timers and threads cost with no request at all
        time.sleep(took)
        idle = dump()
    finally:
        proc.terminate()
        proc.wait(60)
    return {
        "instructions_per_request": round(instructions / requests),
        "idle_instructions_per_second": round(idle / took),
        "per_request_without_idle": round((instructions - idle) / requests),
        "seconds_under_valgrind": round(took, 1),
    }


def pinned(path: Path) -> Path:
    """Every python tier of the portfolio at ``path`` runs on the event loop, as it does at full speed.
    Left to choose, a tier times itself at start and runs inline when a row fits its budget; under
    valgrind (~50x slower) that timing lands either side of the budget from one run to the next, and case b
    counted 215,000 or 375,000 instructions a request (threads) with nothing changed."""
    path.write_text(path.read_text().replace('kind = "python"\n', 'kind = "python"\nrun = "inline"\n'))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--cases", default="a,b,c,e,m,s", help="which cases (a, b, c, e, m, s, S)")
    ap.add_argument("--clients", type=int, default=1, help="connections sending at once (default 1)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-instructions-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    model = LogisticRegression(max_iter=10000).fit(data.data, data.target)
    joblib.dump(model, work / "model.joblib")
    row = dict(zip(names, data.data[0].tolist(), strict=True))
    good = json.dumps({"inputs": row}).encode()
    bad = json.dumps({"inputs": {**row, "f3": "not a number"}}).encode()
    dead = f"http://127.0.0.1:{free_port()}"
    remote = (f'[[models.m.tiers]]\nname = "remote"\nkind = "oip"\nurl = "{dead}"\nmodel_name = "m"\n'
              "timeout_ms = 50\nbreaker = { window = 10, min_calls = 5, open_ms = 3600000 }\n")  # fmt: skip
    serve = [sys.executable, "-m", "failsoft.cli", "serve", "--port", "{port}", "--log-level", "warning"]
    ready = "/v2/health/ready"
    bare = [sys.executable, str(HERE / "bare_app.py"), str(work / "model.joblib"), ",".join(names), "{port}"]
    predict = "/v1/models/m/predict"
    healthy = str(pinned(portfolio(work, "", names)))
    broken = str(pinned(portfolio(work, remote, names)))
    monitored = work / "monitored.toml"
    monitored.write_text(
        Path(healthy).read_text() + MONITOR.format(profile=write_profile(work, data, model, names))
    )
    shadowed = work / "shadowed.toml"
    shadowed.write_text(
        Path(healthy).read_text()
        + "".join(CANDIDATES.format(name=n, path=work / "model.joblib") for n in ("cand-a", "cand-b"))
    )
    pinned(shadowed)
    slow_shadow = work / "shadowed-slow.toml"
    slow_shadow.write_text(shadowed.read_text() + f"\n[shadow]\nlinger_ms = {5 * VALGRIND_PACE}\n")
    cases = {
        "a": ("bare app", bare, "/ready", "/", good),
        "b": ("failsoft, healthy", [*serve, healthy], ready, predict, good),
        "c": ("failsoft, breaker open", [*serve, "--allow-unproven", broken], ready, predict, good),
        "e": ("failsoft, corrupt row", [*serve, healthy], ready, predict, bad),
        "m": ("failsoft, monitored", [*serve, str(monitored)], ready, predict, good),
        "s": ("failsoft, two shadows", [*serve, str(shadowed)], ready, predict, good),
        "S": ("failsoft, two shadows, slow", [*serve, str(slow_shadow)], ready, predict, good),
    }
    results = {}
    for key in args.cases.split(","):
        name, cmd, ready_path, path, body = cases[key]
        results[name] = measure(
            cmd, ready_path, path, body, args.warmup, args.requests, work / key, args.clients
        )
        r = results[name]
        print(
            f"{name:28} {r['instructions_per_request']:>12,} instructions a request "
            f"({r['per_request_without_idle']:,} without what the idle process spends in as long: "
            f"{r['idle_instructions_per_second']:,} a second)",
            flush=True,
        )
    base = results.get("bare app")
    if base:
        for r in results.values():
            r["vs_bare"] = round(r["instructions_per_request"] / base["instructions_per_request"], 3)
    print(json.dumps({"requests": args.requests, "clients": args.clients, "results": results}))


if __name__ == "__main__":
    main()
