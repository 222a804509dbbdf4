"""What failsoft costs on the request path, side by side with a bare app, in one run.

(a) bare: a bare ASGI app calling predict_proba directly (bench/bare_app.py)
(b) healthy: failsoft, primary = the same model in a python tier (compiled at load)
(c) breaker_open: failsoft, primary = a remote tier whose breaker is open; the same model answers next
(d) hanging: failsoft, primary = a remote tier that never answers; answered at the deadline

Same model (logistic regression on scikit-learn's bundled breast-cancer set: 30 floats a row), same server
stack (uvicorn + uvloop + httptools), load from wrk in a second process over loopback, at concurrency 1 and
32. The last line printed is one JSON object with every figure and the ratios to (a).

    python bench/overhead.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import joblib
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import free_port, wait_http

HERE = Path(__file__).resolve().parent
DEADLINE_MS = 50


def wrk(url: str, body: str | list[str], connections: int, seconds: int) -> dict[str, float]:
    """wrk POSTing ``body``, or a body drawn at random from a list for each request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        if isinstance(body, str):
            fh.write(f"wrk.body = {json.dumps(body)}\n")
        else:
            fh.write("bodies = {" + ",".join(json.dumps(b) for b in body) + "}\n")
            pick = "bodies[math.random(#bodies)]"
            fh.write(f"request = function()\n  return wrk.format(nil, nil, nil, {pick})\nend\n")
        script = fh.name
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    units = {"us": 0.001, "ms": 1.0, "s": 1000.0}

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * units[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {
        "rps": round(rps, 1),
        "p50_ms": round(pct("50"), 3),
        "p99_ms": round(pct("99"), 3),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "requests": int(total.group(1)) if total else 0,
    }


class Served(NamedTuple):
    url: str  # base URL
    pid: int


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and every process under it (the log
    writer; with --workers, the workers and theirs): a figure that wanders far less between runs than
    requests a second on a shared machine."""
    tick = os.sysconf("SC_CLK_TCK")
    used: dict[str, float] = {}
    parent: dict[str, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parent[stat.parent.name] = fields[1]
        used[stat.parent.name] = (int(fields[11]) + int(fields[12])) / tick
    total = 0.0
    for proc in used:
        up = proc
        while up not in ("0", str(pid)) and up in parent:
            up = parent[up]
        total += used[proc] if up == str(pid) else 0.0
    return total


def wrk_cpu(gw: Served, url: str, body: str | list[str], connections: int, seconds: int) -> dict[str, float]:
    """``wrk``'s figures and the gateway's CPU microseconds per answered request during the run."""
    before = cpu_s(gw.pid)
    point = wrk(url, body, connections, seconds)
    point["cpu_us"] = round((cpu_s(gw.pid) - before) / max(point["requests"], 1) * 1e6, 1)
    return point


@contextlib.contextmanager
def served(config: Path, checkout: Path | None = None) -> Iterator[Served]:
    """``failsoft serve config`` on a free loopback port, ready; yields its base URL and pid, stops it
    gracefully. With ``checkout``, the failsoft of that source tree (an earlier build, its dependencies
    installed in this environment) serves instead of this one."""
    port = free_port()
    env = None if checkout is None else {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "failsoft.cli", "serve", str(config), "--port", str(port),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=checkout, env=env,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(base + "/v2/health/ready", proc)
        yield Served(base, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(15)


def compare(results: dict[str, list[dict[str, Any]]], base: str, other: str) -> dict[str, Any]:
    """Side-by-side figures of two configurations run in alternating rounds: medians, the ratio of the
    medians (other / base), and the median of the per-round ratios (the two runs of a round are back to
    back, so a round's ratio sees the machine in one state)."""
    figures = ("rps", "p99_ms", "cpu_us") if all("cpu_us" in p for v in results.values() for p in v) else (
        "rps", "p99_ms")  # fmt: skip
    med = {k: {m: statistics.median(p[m] for p in v) for m in figures} for k, v in results.items()}
    pairs = list(zip(results[other], results[base], strict=True))
    out = {
        "rounds": results,
        "median": med,
        "throughput_ratio": round(med[other]["rps"] / med[base]["rps"], 3),
        "p99_ratio": round(med[other]["p99_ms"] / med[base]["p99_ms"], 3),
        "median_paired_throughput_ratio": round(statistics.median(o["rps"] / b["rps"] for o, b in pairs), 3),
        "median_paired_p99_ratio": round(statistics.median(o["p99_ms"] / b["p99_ms"] for o, b in pairs), 3),
    }
    if "cpu_us" in figures:  # the gateway's CPU per request (process and log writer), other / base
        out["cpu_per_request_ratio"] = round(med[other]["cpu_us"] / med[base]["cpu_us"], 3)
    return out


def portfolio(work: Path, primary: str, names: list[str], store: str = "") -> Path:
    """The benchmark's portfolio: an optional primary tier, then the compiled model, then a default.
    ``store`` is a [store] table; without one, the default (every answer logged to SQLite)."""
    inputs = "".join(f'[[models.m.inputs]]\nname = "{n}"\n' for n in names)
    text = f"""
trusted_model_dirs = ["{work}"]
data_dir = "{work / "state"}"
{store}
[models.m]
deadline_ms = {DEADLINE_MS}
{inputs}
[models.m.output]
type = "float"
min = 0
max = 1
{primary}
[[models.m.tiers]]
name = "lr"
kind = "python"
path = "{work / "model.joblib"}"
max_concurrency = 1024
[[models.m.tiers]]
kind = "default"
value = 0.5
"""
    path = work / f"portfolio-{abs(hash(primary + store))}.toml"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5, help="measured seconds per point (default 5)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/overhead.py needs wrk (Debian/Ubuntu: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    row = dict(zip(names, data.data[0].tolist(), strict=True))
    body = json.dumps({"inputs": row})
    procs: list[subprocess.Popen[bytes]] = []
    dead_port = free_port()  # nothing listens here: every call is refused
    hang_port = free_port()
    hang = subprocess.Popen(
        [sys.executable, "-m", "failsoft.demo.backend", "--port", str(hang_port), "--mode", "hang"],
        stderr=subprocess.DEVNULL,
    )
    procs.append(hang)
    wait_http(f"http://127.0.0.1:{hang_port}/v2/health/ready", hang)

    def remote(url: str, breaker: str) -> str:
        return (
            f'[[models.m.tiers]]\nname = "remote"\nkind = "oip"\nurl = "{url}"\nmodel_name = "m"\n'
            f"timeout_ms = {DEADLINE_MS}\nmax_concurrency = 1024\nbreaker = {breaker}\n"
        )

    cases: dict[str, list[str]] = {
        "a_bare": [sys.executable, str(HERE / "bare_app.py"), str(work / "model.joblib"), ",".join(names)],
        "b_healthy": ["serve", str(portfolio(work, "", names))],
        "c_breaker_open": [
            "serve",
            str(
                portfolio(
                    work,
                    remote(
                        f"http://127.0.0.1:{dead_port}", "{ window = 10, min_calls = 5, open_ms = 3600000 }"
                    ),
                    names,
                )
            ),
        ],
        # The breaker never opens here (it would need 10^6 straight failures): every request waits.
        "d_hanging": [
            "serve",
            str(
                portfolio(
                    work,
                    remote(
                        f"http://127.0.0.1:{hang_port}",
                        "{ window = 1000000, min_calls = 1000000, failure_rate = 1.0 }",
                    ),
                    names,
                )
            ),
        ],
    }
    results: dict[str, Any] = {}
    try:
        for name, cmd in cases.items():
            port = free_port()
            if cmd[0] == "serve":
                cmd = [
                    sys.executable,
                    "-m",
                    "failsoft.cli",
                    "serve",
                    cmd[1],
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ]
                ready = f"http://127.0.0.1:{port}/v2/health/ready"
                url = f"http://127.0.0.1:{port}/v1/models/m/predict"
            else:
                cmd = [*cmd, str(port)]
                ready = f"http://127.0.0.1:{port}/ready"
                url = f"http://127.0.0.1:{port}/predict"
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(proc)
            wait_http(ready, proc)
            req = urllib.request.Request(
                url, data=body.encode(), headers={"content-type": "application/json"}
            )
            with urllib.request.urlopen(req) as r:
                sample = json.loads(r.read())
            wrk(url, body, 8, 2)  # warm up (and, for (c), open the breaker)
            results[name] = {"answered_by": sample.get("tier", "bare")}
            for c in (1, 32):
                results[name][f"c{c}"] = point = wrk(url, body, c, args.seconds)
                print(
                    f"{name:15s} c={c:<3d} {point['rps']:>9.1f} req/s  p50 {point['p50_ms']:.3f} ms  "
                    f"p99 {point['p99_ms']:.3f} ms  non-2xx {point['non_2xx']}",
                    file=sys.stderr,
                )
            proc.send_signal(signal.SIGINT)
            proc.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)
    base = results["a_bare"]
    ratios = {}
    for name, r in results.items():
        for c in ("c1", "c32"):
            ratios[f"{name}/{c}/rps_ratio"] = round(r[c]["rps"] / base[c]["rps"], 2)
            ratios[f"{name}/{c}/p99_delta_ms"] = round(r[c]["p99_ms"] - base[c]["p99_ms"], 3)
    verdict = {
        "b_throughput_at_least_2x_bare_c32": ratios["b_healthy/c32/rps_ratio"] >= 2.0,
        "c_p99_within_1ms_of_bare": all(
            ratios[f"c_breaker_open/{c}/p99_delta_ms"] <= 1.0 for c in ("c1", "c32")
        ),
        "d_p99_within_deadline_plus_5ms": all(
            results["d_hanging"][c]["p99_ms"] <= DEADLINE_MS + 5 for c in ("c1", "c32")
        ),
    }
    print(json.dumps({"deadline_ms": DEADLINE_MS, "results": results, "ratios": ratios, "verdict": verdict}))


if __name__ == "__main__":
    main()
