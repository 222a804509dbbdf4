"""Ten faulty models and their healthy twins, for ``bench/thousand.py``'s isolation phase, and the client
that asks them: a process of its own, as the callers of a faulty model are other services, not the ones
whose latency is measured.

The faulty models' tiers fail in five ways (two models of each): raising, hanging in a thread, spinning in
Python in a worker process, growing their memory in a worker held to 400 MB, answering NaN; each has a
safe default. Each twin is the same model, run the same way (threads or a worker process, the same
timeout), with a tier that answers: the portfolio is the same, and so is the traffic; only the faults
differ.

    python bench/faults.py BASE MODELS SECONDS     (MODELS comma-separated; prints one JSON object)
"""

from __future__ import annotations

import asyncio
import collections
import json
import sys
import time
from typing import Any

import aiohttp

FAULTS = {  # what each kind's tier does, and how it runs
    "raising": {"target": "tests.helpers:boom"},
    "hanging": {"target": "tests.helpers:hang", "timeout_ms": 50},
    "spinning": {"target": "tests.helpers:spin", "run": "process", "processes": 1, "timeout_ms": 50},
    "growing": {"target": "tests.helpers:grow", "run": "process", "processes": 1, "max_memory_mb": 400},
    "nan": {"target": "tests.helpers:nan"},
}
HEALTHY = "tests.helpers:score"
ROW = {"x": 7.0}  # spin spins on it; score answers 0.7


def models(healthy: bool = False) -> dict[str, Any]:
    """``faulty-KIND-I``, or its twin ``healthy-KIND-I`` (the same tier settings, a model that answers)."""
    out = {}
    for kind, tier in FAULTS.items():
        for i in range(2):
            own = {"name": "cpu", "kind": "python", **tier}
            if healthy:
                own = {k: v for k, v in own.items() if k != "max_memory_mb"} | {"target": HEALTHY}
            tiers = [own, {"kind": "default", "value": 0.5}]
            name = f"{'healthy' if healthy else 'faulty'}-{kind}-{i}"
            out[name] = {"deadline_ms": 100, "inputs": [{"name": "x"}], "tiers": tiers}
    return out


async def ask(base: str, names: list[str], seconds: float) -> dict[str, Any]:
    """Each model in turn, one request at a time, with a 50 ms pause after each round, for ``seconds``:
    how many, how many were not 200, which tiers and reasons answered."""
    statuses: collections.Counter[int] = collections.Counter()
    tiers: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    end = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < end:
            for name in names:
                async with session.post(f"{base}/v1/models/{name}/predict", json={"inputs": ROW}) as r:
                    statuses[r.status] += 1
                    if r.status == 200:
                        body = await r.json()
                        tiers[body["tier"]] += 1
                        reasons[str(body.get("reason"))] += 1
            await asyncio.sleep(0.05)
    return {
        "requests": sum(statuses.values()),
        "non_2xx": sum(n for s, n in statuses.items() if s != 200),
        "answered_by": dict(tiers),
        "reasons": dict(reasons),
    }


async def asked_elsewhere(base: str, names: list[str], seconds: float) -> asyncio.subprocess.Process:
    """``ask`` in a process of its own; its JSON on its stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable, __file__, base, ",".join(names), str(seconds), stdout=asyncio.subprocess.PIPE
    )


def lag_buckets(metrics_text: str) -> dict[str, float]:
    """The serving process's event-loop lag histogram (``failsoft_event_loop_lag_seconds``), cumulative."""
    out = {}
    for line in metrics_text.splitlines():
        if line.startswith("failsoft_event_loop_lag_seconds_bucket"):
            out[line.split('le="')[1].split('"')[0]] = float(line.rsplit(" ", 1)[1])
    return out


def lags_over(before: dict[str, float], after: dict[str, float]) -> dict[str, int]:
    """Between two reads of ``lag_buckets``: how many times the loop woke more than 5, 10 and 25 ms late."""
    total = after["+Inf"] - before.get("+Inf", 0)
    return {
        f"{float(le) * 1000:g}ms": int(total - (after[le] - before.get(le, 0)))
        for le in ("0.005", "0.01", "0.025")
        if le in after
    }


def lags_sum(lags: list[dict[str, int]]) -> dict[str, int]:
    """``lags_over`` of several stretches, added up."""
    return {k: sum(lag[k] for lag in lags) for k in lags[0]} if lags else {}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(ask(sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])))))
