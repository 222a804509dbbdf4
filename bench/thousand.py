"""A portfolio of 1,000 models on one box (bench/fleet.py's mix), served with ``[server] load =
"first_use"`` and a memory budget that holds 20% of the models' bytes, measured from outside in one run
of two fresh gateways.

The first: (1) seconds from the process's start until every model is routable (``/v2/health/ready``),
and its resident size then; (2) the first second: requests at the Zipf mix from the moment it is ready,
every one answered (200) within its deadline, the share answered by a fallback because the model was
loading; then every model asked once, and (3) ``/metrics`` with a latency histogram for each model (the
default) and the console's document, read in turns: their sizes, the series, the time each takes and the
longest a hot request waited meanwhile.

The second (``latency_histograms = 100``): (4) cold loads: the first model asked right after the start
(it waits for the libraries' import), then 100 small models never used, one after another, from a
model's first request until its own tier answers (polled every millisecond), p50/p99, and the resident
size with them loaded; (5) the 10 hottest models' latency (open loop, 300 requests a second) quiet and
with 20 small cold models a second asked for the first time, in alternating rounds (``--rounds``),
pooled: the gateway's own p99 and the client's, and the quiet rounds' against each other (the noise
floor); (6) traffic cycling through all 1,000 (uniform) for ``--cycle-seconds``: answered, non-2xx, the
degraded share, loads and unloads a second (the budget at work); (7) ``/metrics`` again; (8) ten faulty
models beside them (two each raising, hanging, spinning in Python in a worker process, growing their
memory in one held to 400 MB, answering NaN), asked 20 times a second each, against their healthy twins
in alternating rounds: the hot models' p99 with each (and the twins' rounds against each other), 100
models' answers before and during; (9) a reload under load (300 requests a second): 100 models added,
100 removed, 100 replaced, then a broken file.

Prints each phase, then one JSON object. Generating the fleet takes a minute or so; ``--keep DIR`` keeps
it for the next run.

    python bench/thousand.py [--models 1000] [--seconds 10] [--cycle-seconds 30] [--keep /tmp/fleet]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
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

import faults  # noqa: E402
from fleet import generate  # noqa: E402

from failsoft.demo.procs import Proc  # noqa: E402
from failsoft.tasks import stop  # noqa: E402

ROW = {f"f{i}": 0.5 for i in range(8)}
TOKEN = "thousand-bench-token-0123456789"
Results = list[tuple[int, dict[str, Any], float]]  # a request's status, body and client-side ms


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
        return await self.predict_row(model, ROW)

    async def predict_row(self, model: str, row: dict[str, float]) -> tuple[int, dict[str, Any], float]:
        t0 = time.perf_counter()
        async with self.session.post(f"{self.base}/v1/models/{model}/predict", json={"inputs": row}) as r:
            body = await r.json() if r.status == 200 else {}
            return r.status, body, (time.perf_counter() - t0) * 1000

    async def own_tier(self, model: str, row: dict[str, float] = ROW, poll_s: float = 0.005) -> None:
        """Asked every ``poll_s`` until the model's own tier answers (it has loaded)."""
        while (await self.predict_row(model, row))[1].get("tier") != "cpu":
            await asyncio.sleep(poll_s)

    async def text(self, path: str) -> str:
        async with self.session.get(f"{self.base}{path}") as r:
            return await r.text()

    async def metrics(self) -> dict[str, float]:
        text = await self.text("/metrics")
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("failsoft_model") and " " in line and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    async def close(self) -> None:
        await self.session.close()


async def open_loop(client: Client, pick: Any, rate: float, seconds: float) -> Results:
    """``rate`` requests a second for ``seconds``, each to ``pick()``, not waiting for answers to send. The
    collector is off meanwhile: with the answers of earlier phases in memory, one full collection in this
    process held its requests up to 95 ms, which read as the gateway's latency."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return await _open_loop(client, pick, rate, seconds)
    finally:
        gc.enable()


async def _open_loop(client: Client, pick: Any, rate: float, seconds: float) -> Results:
    tasks = []
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.predict(pick())))
    return await asyncio.gather(*tasks)


def noise_floor(halves: list[Results]) -> float:
    """The clients' p99 of an arm's odd rounds over its even ones: nothing differs but the time, so this is
    how far the measure itself spreads."""
    odd, even = (pct([c for _, _, c in half], 0.99) for half in (halves[1], halves[0]))
    return round(odd / max(even, 1e-9), 2)


def summary(results: Results, deadline_ms: float) -> dict[str, Any]:
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


def start(served: Path, log: Path) -> tuple[Proc, float]:
    gw = Proc([sys.executable, "-m", "failsoft.cli", "serve", str(served), "--log-level", "warning"],
              "/v2/health/ready", log)  # fmt: skip
    started = time.monotonic()
    gw.start()
    return gw, time.monotonic() - started


async def idle(client: Client) -> None:
    """Until the loader has nothing queued."""
    while (await client.metrics()).get("failsoft_models_loading", 0) > 0:
        await asyncio.sleep(0.05)


async def first_run(gw: Proc, fleet: dict[str, Any], ready_s: float) -> dict[str, Any]:
    """A fresh gateway: how soon it routes, its size then, the first second at the Zipf mix; then every
    model asked once, and /metrics with a latency histogram for each of the 1,000 (the default)."""
    assert gw.proc is not None
    out: dict[str, Any] = {"ready_s": round(ready_s, 2), "rss_ready_mb": round(rss_mb(gw.proc.pid), 1)}
    print(f"start: routable after {out['ready_s']} s, {out['rss_ready_mb']} MB")
    client = Client(gw.url)
    names, weights = fleet["models"], fleet["weights"]
    try:
        first = await open_loop(client, lambda: random.choices(names, weights)[0], 500, 1.0)
        out["first_second"] = summary(first, 100)
        print(f"first second: {out['first_second']}")
        await asyncio.gather(*(client.predict(n) for n in names))
        await idle(client)  # the scrape alone, not beside a thousand loads
        out["metrics_all_histograms"] = await scrape(client, names[:10])
        print(f"/metrics, every model's histogram: {out['metrics_all_histograms']}")
    finally:
        await client.close()
    return out


async def isolation(
    client: Client, gw: Proc, names: list[str], seconds: float, rounds: int
) -> dict[str, Any]:
    """The 10 hottest models at 300 requests a second while the ten faulty models are asked (about 20
    times a second each, by a client process of their own: bench/faults.py), against the same while their
    healthy twins are asked instead: the same portfolio and traffic, only the faults differ. First the
    onset (the faulty models' first requests: they load, then fail), then ``rounds`` rounds of each, in
    alternating order, pooled (and the twins' odd rounds against their even ones: what the measure itself
    spreads); the serving loop's lags in each; 100 loaded models' answers, before and during: the same."""
    hot, sample = names[:10], names[10:110]
    for name in sample:
        await client.own_tier(name)
    for name in faults.models(healthy=True):  # loaded: the faulty models are not, until the onset
        await client.own_tier(name, faults.ROW)
    for name in hot:  # loaded again where the loads above took their place under the budget
        await client.own_tier(name)
    await idle(client)
    before = [(await client.predict(n))[1]["outputs"] for n in sample]
    pick = lambda: random.choice(hot)  # noqa: E731
    asked: list[dict[str, Any]] = []

    async def arm(healthy: bool, secs: float) -> tuple[Results, dict[str, int]]:
        lag0 = faults.lag_buckets(await client.text("/metrics"))
        proc = await faults.asked_elsewhere(client.base, list(faults.models(healthy)), secs)
        results = await open_loop(client, pick, 300, secs)
        out = json.loads((await proc.communicate())[0])
        if not healthy:
            asked.append(out)
        return results, faults.lags_over(lag0, faults.lag_buckets(await client.text("/metrics")))

    quiet, _ = await arm(True, seconds)
    onset, _ = await arm(False, seconds)
    pooled: dict[bool, Results] = {True: [], False: []}
    halves: list[Results] = [[], []]  # the twins' rounds, even and odd: the same arm against itself
    lags: dict[bool, list[dict[str, int]]] = {True: [], False: []}
    ratios = []
    for r in range(rounds):
        p99 = {}
        for healthy in (True, False) if r % 2 else (False, True):
            results, lag = await arm(healthy, seconds / 2)
            pooled[healthy] += results
            if healthy:
                halves[r % 2] += results
            lags[healthy].append(lag)
            p99[healthy] = pct([c for _, _, c in results], 0.99)
        ratios.append(round(p99[False] / max(p99[True], 1e-9), 2))
    during = [(await client.predict(n))[1]["outputs"] for n in sample]
    healthy_s, faulty_s = summary(pooled[True], 100), summary(pooled[False], 100)
    twins_lags, faulty_lags = faults.lags_sum(lags[True]), faults.lags_sum(lags[False])
    assert gw.proc is not None
    return {
        "onset": {"healthy_twins": summary(quiet, 100), "faulty": summary(onset, 100)},
        "rounds": rounds, "healthy_twins": healthy_s, "with_faults": faulty_s,
        "gateway_p99_ratio": round(faulty_s["gateway_p99_ms"] / max(healthy_s["gateway_p99_ms"], 1e-9), 2),
        "client_p99_ratio": round(faulty_s["client_p99_ms"] / max(healthy_s["client_p99_ms"], 1e-9), 2),
        "client_p99_ratio_a_round": ratios,
        "twins_against_twins_client_p99_ratio": noise_floor(halves),
        "loop_lags": {"healthy_twins": twins_lags, "with_faults": faulty_lags},
        "same_answers": before == during,
        "faulty_requests": sum(a["requests"] for a in asked),
        "faulty_non_2xx": sum(a["non_2xx"] for a in asked),
        "faulty_answered_by": sorted({t for a in asked for t in a["answered_by"]}),
        "gateway_alive": gw.proc.poll() is None, "rss_mb": round(rss_mb(gw.proc.pid), 1),
    }  # fmt: skip


async def reload_under_load(client: Client, served: Path, names: list[str]) -> dict[str, Any]:
    """The file changed under load (300 requests a second to models in both files): 100 models added,
    100 removed, 100 replaced, applied by ``POST /v1/reload``; then a broken file, refused."""
    doc = tomllib.loads(served.read_text())
    removed, replaced, kept = names[-100:], names[-200:-100], names[10:-200]
    template = doc["models"][next(n for n in kept if n in doc["models"])]
    for name in removed:
        del doc["models"][name]
    for name in replaced:
        doc["models"][name]["tiers"][-1]["value"] = 0.4
    added = [f"new{i:03d}" for i in range(100)]
    for name in added:
        doc["models"][name] = template
    original = served.read_text()
    served.write_text(tomli_w.dumps(doc))
    auth = {"authorization": f"Bearer {TOKEN}"}
    load = asyncio.create_task(open_loop(client, lambda: random.choice(kept), 300, 6.0))
    await asyncio.sleep(2.0)
    t0 = time.perf_counter()
    async with client.session.post(f"{client.base}/v1/reload", headers=auth) as r:
        change = await r.json()
        assert r.status == 200, change
    took = (time.perf_counter() - t0) * 1000
    while (await client.predict(added[0]))[0] != 200:
        await asyncio.sleep(0.001)
    answering = (time.perf_counter() - t0) * 1000
    results = await load
    served.write_text("[models.broken\n")
    async with client.session.post(f"{client.base}/v1/reload", headers=auth) as r:
        refused = r.status, (await r.json()).get("error", "")
    still = (await client.predict(added[0]))[0], (await client.predict(removed[0]))[0]
    served.write_text(original)
    return {
        "added": len(change["added"]), "removed": len(change["removed"]), "replaced": len(change["replaced"]),
        "reload_ms": round(took, 1), "new_model_answering_ms": round(answering, 1),
        "requests_during": len(results), "non_2xx_during": sum(1 for s, _, _ in results if s != 200),
        "client_p99_during_ms": pct([c for _, _, c in results], 0.99),
        "broken_file": refused[0], "broken_file_error": refused[1][:120],
        "after_broken_file": {"added_model": still[0], "removed_model": still[1]},
    }  # fmt: skip


async def second_run(
    gw: Proc, fleet: dict[str, Any], seconds: float, cycle_s: float, served: Path, rounds: int
) -> dict[str, Any]:
    """A fresh gateway: cold loads of small models one at a time, its size with 100 of them loaded, hot
    models quiet and with cold loads going on, traffic cycling through all, /metrics (histograms for the
    100 busiest)."""
    assert gw.proc is not None
    out: dict[str, Any] = {}
    client = Client(gw.url)
    names, kinds = fleet["models"], fleet["kinds"]
    small = [n for n in names[10:] if kinds[n] == "small"]

    async def own_tier_ms(name: str) -> float:
        """From a model's first request until its own tier answers."""
        t0 = time.perf_counter()
        await client.own_tier(name, poll_s=0.001)
        return (time.perf_counter() - t0) * 1000

    try:
        # the first model asked right after the start waits for the libraries' import (in the background)
        out["first_load_after_start_ms"] = round(await own_tier_ms(small[0]), 1)
        await idle(client)
        cold_ms = [await own_tier_ms(name) for name in small[1:101]]
        out["cold_load_ms"] = {"models": len(cold_ms), "p50": pct(cold_ms, 0.5), "p99": pct(cold_ms, 0.99)}
        out["rss_100_small_loaded_mb"] = round(rss_mb(gw.proc.pid), 1)
        print(
            f"cold loads of small models: {out['cold_load_ms']}; resident {out['rss_100_small_loaded_mb']} MB"
        )
        hot = names[:10]
        for name in hot:  # loaded before the comparison
            await client.own_tier(name, poll_s=0.01)
        await idle(client)
        pick_hot = lambda: random.choice(hot)  # noqa: E731
        cold = iter(small[100:])

        async def cold_loads() -> None:
            while True:
                await client.predict(next(cold))
                await asyncio.sleep(0.05)

        arms: dict[bool, Results] = {False: [], True: []}  # with cold loads or not: rounds, in turns
        halves: list[Results] = [[], []]  # the quiet rounds, even and odd: the same arm against itself
        for i in range(rounds):
            for loading in (False, True) if i % 2 == 0 else (True, False):
                loader = asyncio.create_task(cold_loads()) if loading else None
                results = await open_loop(client, pick_hot, 300, seconds / 2)
                arms[loading] += results
                if not loading:
                    halves[i % 2] += results
                if loader is not None:
                    await stop(loader)
                await idle(client)
        quiet, busy = summary(arms[False], 100), summary(arms[True], 100)
        out["hot"] = {
            "rounds": rounds,
            "quiet": quiet,
            "with_20_cold_loads_a_s": busy,
            "gateway_p99_added_ms": round(busy["gateway_p99_ms"] - quiet["gateway_p99_ms"], 2),
            "client_p99_added_ms": round(busy["client_p99_ms"] - quiet["client_p99_ms"], 2),
            "client_p99_ratio": round(busy["client_p99_ms"] / max(quiet["client_p99_ms"], 1e-9), 2),
            "quiet_against_quiet_client_p99_ratio": noise_floor(halves),
        }
        print(f"hot models: {out['hot']}")
        await idle(client)
        before, t0 = await client.metrics(), time.perf_counter()
        cycling = summary(await open_loop(client, lambda: random.choice(names), 300, cycle_s), 100)
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
        await idle(client)
        out["metrics_100_histograms"] = await scrape(client, hot)
        print(f"/metrics, histograms for the 100 busiest: {out['metrics_100_histograms']}")
        out["isolation"] = await isolation(client, gw, names, seconds, rounds)
        print(f"ten faulty models: {out['isolation']}")
        out["reload"] = await reload_under_load(client, served, names)
        print(f"reload under load: {out['reload']}")
    finally:
        await client.close()
    return out


async def scrape(client: Client, hot: list[str]) -> dict[str, Any]:
    """``/metrics`` and the console's document read ten times each, while a hot model is asked every
    2 ms: a scrape's time and size, the document's, and the longest a request waited meanwhile."""
    waits: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            waits.append((await client.predict(random.choice(hot)))[2])
            await asyncio.sleep(0.002)

    prober = asyncio.create_task(probe())
    took, size, series, console_ms, console_bytes = [], 0, 0, [], 0
    for _ in range(10):
        t0 = time.perf_counter()
        async with client.session.get(f"{client.base}/metrics") as r:
            text = await r.text()
        took.append((time.perf_counter() - t0) * 1000)
        size = len(text)
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        t0 = time.perf_counter()
        async with client.session.get(f"{client.base}/v1/console") as r:
            console_bytes = len(await r.read())
        console_ms.append((time.perf_counter() - t0) * 1000)
    done.set()
    await prober
    return {
        "bytes": size,
        "series": series,
        "scrape_ms_p50": pct(took, 0.5),
        "scrape_ms_max": round(max(took), 1),
        "console_bytes": console_bytes,
        "console_ms_p50": pct(console_ms, 0.5),
        "request_waited_max_ms": round(max(waits), 1),
        "requests_during": len(waits),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="the faults' onset, each arm; a round of each arm (hot models quiet or with cold "
                    "loads, faulty models or twins) lasts half of it")  # fmt: skip
    ap.add_argument("--cycle-seconds", type=float, default=30.0, help="traffic cycling through all")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each arm: hot models quiet and with "
                    "cold loads, faulty models and healthy twins")  # fmt: skip
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
    out: dict[str, Any] = {"models": len(fleet["models"]), "model_files_mb": round(total / 2**20, 1),
                           "budget_mb": budget_mb}  # fmt: skip
    os.environ["FAILSOFT_ADMIN_TOKEN"] = TOKEN  # the gateways' control plane (reload)
    for run, histograms in ((first_run, "all"), (second_run, 100)):
        doc["server"] = {"load": "first_use", "memory_budget_mb": budget_mb, "latency_histograms": histograms}
        doc["data_dir"] = str(work / f"state-{run.__name__}-{os.getpid()}")  # a fresh store each run
        if run is second_run:
            doc["models"] |= faults.models() | faults.models(healthy=True)
        served = work / "served.toml"
        served.write_text(tomli_w.dumps(doc))
        gw, ready_s = start(served, work / "gateway.log")
        try:
            if run is first_run:
                out |= asyncio.run(first_run(gw, fleet, ready_s))
            else:
                out |= asyncio.run(
                    second_run(gw, fleet, args.seconds, args.cycle_seconds, served, args.rounds)
                )
        finally:
            gw.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
