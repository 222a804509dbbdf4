"""A portfolio of 1,000 models on one box (bench/fleet.py's mix), served with ``[server] load =
"first_use"`` and a memory budget that holds 20% of the models' bytes, measured from outside in one run:

1. start: seconds from the process's start until every model is routable (``/v2/health/ready``), and the
   resident size then;
2. the first second: requests at the Zipf mix from the moment it is ready: every one answered (200) within
   its deadline, the share answered by a fallback because the model was loading;
3. cold loads: 100 small models never used, one after another: from a model's first request until its own
   tier answers (polled every millisecond), p50/p99; the resident size with them loaded;
4. hot models' latency (the 10 hottest, open loop at 300 requests a second) quiet, then with 20 cold
   models a second asked for the first time; the gateway's own latency and the client's, p99;
5. traffic cycling through all 1,000 (uniform) for ``--seconds``: answered, non-2xx, the degraded share,
   loads and unloads a second (the budget at work);
6. ``/metrics`` at 1,000 models: its size, series and the time a scrape takes, and the longest a hot
   request waited while it was read.

Prints each phase, then one JSON object. Generating the fleet takes a minute or two; ``--keep DIR`` keeps
it for the next run.

    python bench/thousand.py [--models 1000] [--seconds 10] [--keep /tmp/fleet]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import aiohttp
import tomli_w

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fleet import generate  # noqa: E402

from failsoft.demo.procs import Proc  # noqa: E402

ROW = {f"f{i}": 0.5 for i in range(8)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Client:
    def __init__(self, base: str) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))

    async def predict(self, model: str) -> tuple[int, dict[str, Any], float]:
        t0 = time.perf_counter()
        async with self.session.post(f"{self.base}/v1/models/{model}/predict", json={"inputs": ROW}) as r:
            body = await r.json() if r.status == 200 else {}
            return r.status, body, (time.perf_counter() - t0) * 1000

    async def metrics(self) -> dict[str, float]:
        async with self.session.get(f"{self.base}/metrics") as r:
            text = await r.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("failsoft_model") and " " in line and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    async def close(self) -> None:
        await self.session.close()


async def open_loop(
    client: Client, pick: Any, rate: float, seconds: float
) -> list[tuple[int, dict[str, Any], float]]:
    """``rate`` requests a second for ``seconds``, each to ``pick()``, not waiting for answers to send."""
    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.predict(pick())))
    return await asyncio.gather(*tasks)


def summary(results: list[tuple[int, dict[str, Any], float]], deadline_ms: float) -> dict[str, Any]:
    ok = [b for s, b, _ in results if s == 200]
    gateway = [b["latency_ms"] for b in ok]
    return {
        "requests": len(results),
        "non_2xx": len(results) - len(ok),
        "late": sum(1 for v in gateway if v > deadline_ms),
        "degraded_share": round(sum(1 for b in ok if b["degraded"]) / max(len(ok), 1), 3),
        "loading_share": round(sum(1 for b in ok if b.get("reason") == "loading") / max(len(ok), 1), 3),
        "gateway_p99_ms": pct(gateway, 0.99),
        "client_p50_ms": pct([c for _, _, c in results], 0.50),
        "client_p99_ms": pct([c for _, _, c in results], 0.99),
    }


async def phases(
    gw: Proc, fleet: dict[str, Any], started: float, ready_s: float, seconds: float
) -> dict[str, Any]:
    assert gw.proc is not None
    out: dict[str, Any] = {"ready_s": round(ready_s, 2), "rss_ready_mb": round(rss_mb(gw.proc.pid), 1)}
    print(f"start: routable after {out['ready_s']} s, {out['rss_ready_mb']} MB")
    client = Client(gw.url)
    names, weights, kinds = fleet["models"], fleet["weights"], fleet["kinds"]
    zipf = lambda: random.choices(names, weights)[0]  # noqa: E731
    try:
        first = await open_loop(client, zipf, 500, 1.0)
        out["first_second"] = summary(first, 100)
        print(f"first second: {out['first_second']}")
        used = {n for n in names[:50]}
        used |= {b["model"] for s, b, _ in first if s == 200}
        small = [n for n in names if kinds[n] == "small" and n not in used][:100]
        cold_ms = []
        for name in small:
            t0 = time.perf_counter()
            while True:
                status, body, _ = await client.predict(name)
                if status == 200 and body["tier"] == "cpu":
                    break
                await asyncio.sleep(0.001)
            cold_ms.append((time.perf_counter() - t0) * 1000)
        used |= set(small)
        out["cold_load_ms"] = {"models": len(cold_ms), "p50": pct(cold_ms, 0.5), "p99": pct(cold_ms, 0.99)}
        out["rss_100_small_loaded_mb"] = round(rss_mb(gw.proc.pid), 1)
        print(f"cold loads: {out['cold_load_ms']}; resident {out['rss_100_small_loaded_mb']} MB")
        hot = names[:10]
        for name in hot:  # loaded before the comparison
            while (await client.predict(name))[1].get("tier") != "cpu":
                await asyncio.sleep(0.01)
        pick_hot = lambda: random.choice(hot)  # noqa: E731
        quiet = summary(await open_loop(client, pick_hot, 300, seconds), 100)
        cold = iter([n for n in names if n not in used])

        async def cold_loads() -> None:
            while True:
                await client.predict(next(cold))
                await asyncio.sleep(0.05)

        loader = asyncio.create_task(cold_loads())
        busy = summary(await open_loop(client, pick_hot, 300, seconds), 100)
        loader.cancel()
        out["hot"] = {
            "quiet": quiet,
            "with_20_cold_loads_a_s": busy,
            "gateway_p99_added_ms": round(busy["gateway_p99_ms"] - quiet["gateway_p99_ms"], 2),
            "client_p99_added_ms": round(busy["client_p99_ms"] - quiet["client_p99_ms"], 2),
            "client_p99_ratio": round(busy["client_p99_ms"] / max(quiet["client_p99_ms"], 1e-9), 2),
        }
        print(f"hot models: {out['hot']}")
        before, t0 = await client.metrics(), time.perf_counter()
        cycling = summary(await open_loop(client, lambda: random.choice(names), 300, seconds), 100)
        after, took = await client.metrics(), time.perf_counter() - t0
        for key in ("failsoft_model_loads_total", "failsoft_model_unloads_total"):
            cycling[key.removeprefix("failsoft_model_").removesuffix("_total") + "_a_s"] = round(
                (after.get(key, 0) - before.get(key, 0)) / took, 1
            )
        cycling["models_loaded"] = after.get("failsoft_models_loaded")
        cycling["loaded_mb"] = round(after.get("failsoft_models_loaded_bytes", 0) / 2**20, 1)
        cycling["budget_mb"] = round(after.get("failsoft_models_memory_budget_bytes", 0) / 2**20, 1)
        cycling["rss_mb"] = round(rss_mb(gw.proc.pid), 1)
        out["cycling_all"] = cycling
        print(f"cycling through all: {cycling}")
        out["metrics"] = await scrape(client, hot)
        print(f"/metrics: {out['metrics']}")
    finally:
        await client.close()
    return out


async def scrape(client: Client, hot: list[str]) -> dict[str, Any]:
    """``/metrics`` read ten times, while a hot model is asked every 2 ms: the scrape's time and size,
    and the longest a request waited meanwhile."""
    waits: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            waits.append((await client.predict(random.choice(hot)))[2])
            await asyncio.sleep(0.002)

    prober = asyncio.create_task(probe())
    took, size, series = [], 0, 0
    for _ in range(10):
        t0 = time.perf_counter()
        async with client.session.get(f"{client.base}/metrics") as r:
            text = await r.text()
        took.append((time.perf_counter() - t0) * 1000)
        size = len(text)
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    done.set()
    await prober
    return {
        "bytes": size,
        "series": series,
        "scrape_ms_p50": pct(took, 0.5),
        "scrape_ms_max": round(max(took), 1),
        "request_waited_max_ms": round(max(waits), 1),
        "requests_during": len(waits),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--keep", type=Path, help="a folder for the fleet (reused when it has one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="failsoft-thousand-"))
    index = work / "fleet.json"
    if index.exists():
        fleet = json.loads(index.read_text())
    else:
        print(f"generating {args.models} models in {work} ...", file=sys.stderr)
        fleet = generate(work, args.models, remote=None)
        fleet["file"] = str(fleet["file"])
        index.write_text(json.dumps(fleet))
    # served with models loaded on first use, under a budget of a fifth of the models' bytes
    doc = tomllib.loads(Path(fleet["file"]).read_text())
    total = sum(p.stat().st_size for p in (work / "models").iterdir())
    budget_mb = max(1, int(total * 0.2 / 2**20))
    doc["server"] = {"load": "first_use", "memory_budget_mb": budget_mb}
    served = work / "served.toml"
    served.write_text(tomli_w.dumps(doc))
    args_ = [sys.executable, "-m", "failsoft.cli", "serve", str(served), "--log-level", "warning"]
    gw = Proc(args_, "/v2/health/ready", work / "gateway.log")
    started = time.monotonic()
    gw.start()
    ready_s = time.monotonic() - started
    try:
        out = asyncio.run(phases(gw, fleet, started, ready_s, args.seconds))
    finally:
        gw.stop()
    out["models"] = len(fleet["models"])
    out["model_files_mb"] = round(total / 2**20, 1)
    out["budget_mb"] = budget_mb
    print(json.dumps(out))
    if gw.proc is not None and gw.proc.returncode not in (0, -15, None):
        subprocess.run(["tail", "-20", str(work / "gateway.log")], check=False)


if __name__ == "__main__":
    main()
