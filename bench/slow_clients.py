"""Slow clients past the descriptor limit: a gateway limited to 1,024 descriptors, 1,100 connections
sending their heads or bodies a byte every half second (each reconnecting when cut), and a healthy client
making requests on fresh connections meanwhile. Prints the healthy client's answers by status, its p50 and
p99, and the gateway's refusals by kind (shed: closed to make room; 408: too slow). The last line is one
JSON object.

    python bench/slow_clients.py [--slow 1100] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from failsoft.demo.procs import free_port, serve_command, wait_http  # noqa: E402
from tests.portfolios import default_tier, model, python_tier, write  # noqa: E402
from tests.server.test_overload import healthy, slow  # noqa: E402


async def run(port: int, n_slow: int, n_requests: int) -> dict[str, object]:
    stop = asyncio.Event()
    opened = [0]
    attackers = [asyncio.create_task(slow(port, k, stop, opened)) for k in range(n_slow)]
    await asyncio.sleep(3)
    statuses: Counter[str] = Counter()
    times = []
    for _ in range(n_requests):
        t = time.perf_counter()
        try:
            status, _ = await healthy(port)
        except (OSError, TimeoutError) as err:
            status = type(err).__name__  # type: ignore[assignment]
        times.append((time.perf_counter() - t) * 1000)
        statuses[str(status)] += 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    stop.set()
    for t in attackers:
        t.cancel()
    await asyncio.gather(*attackers, return_exceptions=True)
    refused = dict(re.findall(r'failsoft_connections_refused_total\{status="([^"]+)"\} ([0-9.e+]+)', metrics))
    times.sort()
    return {"slow_connections": n_slow, "slow_connects": opened[0], "healthy_requests": n_requests,
            "healthy_by_status": dict(statuses), "healthy_p50_ms": round(statistics.median(times), 2),
            "healthy_p99_ms": round(times[int(0.99 * (len(times) - 1))], 2),
            "gateway_refused": {k: int(float(v)) for k, v in refused.items()}}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slow", type=int, default=1100)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    with tempfile.TemporaryDirectory(prefix="failsoft-bench-slow-") as tmp:
        churn = model(python_tier("cpu", "tests.helpers:score"), default_tier(0.2),
                      inputs=({"name": "x", "min": 0, "max": 10},))  # fmt: skip
        path = write(Path(tmp), {"churn": churn})
        port = free_port()
        cmd = serve_command(path, port)
        limit = (1024, 1024)  # the gateway may hold 1,024 descriptors and cannot raise it
        gw = subprocess.Popen(cmd, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, limit))
        try:
            wait_http(f"http://127.0.0.1:{port}/v2/health/ready", gw)
            out = asyncio.run(run(port, args.slow, args.requests))
        finally:
            gw.terminate()
            gw.wait(30)
    for k, v in out.items():
        print(f"{k:>20}: {v}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
