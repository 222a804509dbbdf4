"""Orchestrates the demo: data and models, a backend process, the gateway process, traffic and faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import joblib
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from failsoft import env
from failsoft.demo import data
from failsoft.demo.procs import free_port, niced, wait_http
from failsoft.demo.summary import Stats, print_summary, verdict
from failsoft.store import open_store
from failsoft.tasks import stop

# (start as a share of the run, backend action). Every reason of the request path shows up at least once.
SCHEDULE = [
    (0.00, "ok"),
    (0.08, "slow"),  # the remote tier takes 25 ms: its concurrency limit fills -> overloaded
    (0.20, "hang"),  # no answer: timeout, then the breaker opens -> circuit_open
    (0.34, "ok"),  # half-open probes succeed, the breaker closes
    (0.42, "error"),  # HTTP 500 -> error
    (0.54, "ok"),
    (0.60, "garbage"),  # not JSON, NaN, out of range, wrong shape -> invalid_output
    (0.72, "kill"),  # the process dies: connection refused -> error, circuit_open
    (0.86, "restart"),  # it comes back; the breaker lets probes through and closes
]
# (start, end) as shares of the run: recs traffic shifts (a campaign brings night-time users of two
# segments), so its monitor quarantines it while churn stays live
DRIFT = (0.40, 0.70)
CONCURRENCY = 6
RATE_PER_S = 240.0
CORRUPT_SHARE = 0.03


def churn_row(rng: random.Random) -> dict[str, Any]:
    return {n: round(max(lo, min(hi, rng.gauss(c, s))), 3) for n, c, s, lo, hi in data.CHURN_FEATURES}


def recs_row(rng: random.Random, drifted: bool = False) -> dict[str, Any]:
    if drifted:
        return {"segment": rng.randrange(2), "hour": rng.randrange(4)}
    return {"segment": rng.randrange(data.N_SEGMENTS), "hour": rng.randrange(24)}


def corrupt(row: dict[str, Any], rng: random.Random) -> bytes:
    """A well-formed request whose values are broken: NaN, a string, out of range, or a missing feature."""
    key = rng.choice(list(row))
    kind = rng.randrange(4)
    if kind == 0:
        return json.dumps({"inputs": {**row, key: float("nan")}}).encode()  # Python writes NaN
    if kind == 1:
        row = {**row, key: "n/a"}
    elif kind == 2:
        row = {**row, key: -1e9}
    else:
        row = {k: v for k, v in row.items() if k != key}
    return json.dumps({"inputs": row}).encode()


class Demo:
    def __init__(self, duration: float, port: int, data_dir: Path, faults: bool, console: Console) -> None:
        self.duration = duration
        self.port = port or free_port()
        self.backend_port = free_port()
        self.data_dir = data_dir
        self.faults = faults
        self.console = console
        self.keep_serving = False  # after the summary, serve until Ctrl-C (to look at audits, the console)
        self.backend: subprocess.Popen[bytes] | None = None
        self.gateway: subprocess.Popen[bytes] | None = None
        self.stats = Stats({"churn": 60.0, "recs": 60.0})
        self.token = os.urandom(16).hex()
        # (request id, label) of churn answers: the outcome, known only later
        self.outcomes: list[dict[str, Any]] = []
        self.truth: Any = None

    def start_backend(self) -> subprocess.Popen[bytes]:
        m = self.data_dir / "models"
        log = (self.data_dir / "backend.log").open("ab")
        self.backend = subprocess.Popen(
            niced(
                [
                    sys.executable,
                    "-m",
                    "failsoft.demo.backend",
                    "--port",
                    str(self.backend_port),
                    "--model",
                    f"churn={m / 'churn_heavy.joblib'}",
                    "--model",
                    f"recs={m / 'recs_heavy.joblib'}",
                    "--model",
                    f"churn_v2={m / 'churn_candidate.joblib'}",
                ]
            ),
            stdout=log,
            stderr=log,
        )
        return self.backend

    async def control(self, session: aiohttp.ClientSession, mode: str) -> None:
        url = f"http://127.0.0.1:{self.backend_port}/control"
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.post(url, json={"mode": mode, "delay_ms": 25}) as r:
                await r.read()

    async def faults_loop(self, session: aiohttp.ClientSession, t0: float) -> None:
        schedule = SCHEDULE if self.faults else SCHEDULE[:1]
        for share, action in schedule:
            await asyncio.sleep(max(0.0, t0 + share * self.duration - time.monotonic()))
            self.stats.phase = action
            if action == "kill" and self.backend is not None:
                self.backend.send_signal(signal.SIGKILL)
                self.backend.wait()
            elif action == "restart":
                self.start_backend()
            else:
                await self.control(session, action)

    async def worker(self, session: aiohttp.ClientSession, seed: int, t0: float, stop_at: float) -> None:
        rng = random.Random(seed)
        drift_from, drift_to = (t0 + share * self.duration for share in DRIFT)
        gap = CONCURRENCY / RATE_PER_S
        base = f"http://127.0.0.1:{self.port}/v1/models"
        while (now := time.monotonic()) < stop_at:
            model = "churn" if rng.random() < 0.6 else "recs"
            row = churn_row(rng) if model == "churn" else recs_row(rng, drift_from <= now < drift_to)
            body = corrupt(row, rng) if rng.random() < CORRUPT_SHARE else json.dumps({"inputs": row}).encode()
            t = time.perf_counter()
            try:
                async with session.post(
                    f"{base}/{model}/predict", data=body, headers={"content-type": "application/json"}
                ) as r:
                    doc = await r.json() if r.status == 200 else None
                    status = r.status
            except (aiohttp.ClientError, OSError):
                doc, status = None, 599
            self.stats.add(model, status, doc, (time.perf_counter() - t) * 1000.0)
            if model == "churn" and doc is not None:
                self.outcomes.append({"id": doc["id"], "row": row, "u": rng.random()})
            await asyncio.sleep(max(0.0, now + gap * rng.uniform(0.5, 1.5) - time.monotonic()))

    async def labels_loop(self, session: aiohttp.ClientSession) -> None:
        """Outcomes arrive late: every two seconds, the labels of what was answered before."""
        url = f"http://127.0.0.1:{self.port}/v1/labels"
        headers = {"authorization": f"Bearer {self.token}"}
        while True:
            await asyncio.sleep(2.0)
            await self.send_labels(session, url, headers)

    async def send_labels(self, session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> None:
        pending, self.outcomes = self.outcomes, []
        if pending and self.truth is not None:
            # the world the demo simulates: churn happens with the heavy model's probability
            x = [[o["row"][n] for n, *_ in data.CHURN_FEATURES] for o in pending]
            # off the client's loop: a stalled client would count its own stall as gateway latency
            p = (await asyncio.to_thread(self.truth.predict_proba, x))[:, 1]
            batch = [{"id": o["id"], "label": int(o["u"] < pi)} for o, pi in zip(pending, p, strict=True)]
            async with session.post(url, json=batch, headers=headers) as r:
                self.stats.labels += (await r.json()).get("received", 0) if r.status == 200 else 0

    async def _shadow(self) -> dict[str, Any]:
        await asyncio.sleep(0.5)  # the last answers reach the log
        url = f"http://127.0.0.1:{self.port}/v1/models/churn/shadows"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            doc = await r.json()
        c = doc["candidates"][0]
        m = c["metric"]
        return {"model": "churn", "candidate": c["candidate"], "mirrored": c["mirrored"],
                "labelled_pairs": c["labelled_pairs"], "agreement": c["agreement"],
                "auc_live": m.get("live"), "auc_candidate": m.get("candidate"), "ci95": m.get("ci95"),
                "verdict": "may be promoted" if c["verdict"]["passed"] else "not proven",
                "failing": c["verdict"]["failing"]}  # fmt: skip

    async def _monitor(self, model: str) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/v1/models/{model}/monitor"
        async with aiohttp.ClientSession() as s, s.get(url) as r:
            doc = await r.json()
        windows = doc["windows"]
        # the newest estimate that could be made (a window the heavy tier hardly answered has none)
        estimated = next(
            (w["estimated"] for w in windows if (w["estimated"] or {}).get("roc_auc") is not None), None
        )
        realized = next((w["realized"] for w in windows if w["realized"]), None)
        return {"health": doc["health"], "windows": doc["windows_judged"], "verdicts": doc["verdicts"],
                "transitions": [t["to"] for t in doc["transitions"]],
                "estimated": estimated, "realized": realized}  # fmt: skip

    def table(self, elapsed: float) -> Table:
        s = self.stats
        t = Table(
            title=f"failsoft demo: {elapsed:5.1f}/{self.duration:.0f} s, backend {s.phase}", expand=False
        )
        t.add_column("requests")
        t.add_column("non-2xx")
        t.add_column("degraded")
        t.add_column("answered by")
        t.add_column("skips by reason")
        tiers = ", ".join(f"{k} {v}" for k, v in sorted(s.by_tier.items()))
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.by_reason.items()))
        t.add_row(str(s.requests), str(s.non_2xx), str(s.degraded), tiers, reasons)
        return t

    async def run(self, live: bool) -> dict[str, Any]:
        # The kill-and-restart fault lasts over a tenth of the run: an audit item opens during it.
        audit_after = round(max(1.0, self.duration / 12), 1)
        toml = data.build(self.data_dir, f"http://127.0.0.1:{self.backend_port}", audit_after)
        self.console.print(f"[dim]models trained into {self.data_dir}; portfolio: {toml}[/]")
        self.start_backend()
        glog = (self.data_dir / "gateway.log").open("ab")
        self.truth = joblib.load(self.data_dir / "models" / "churn_heavy.joblib")
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "failsoft.cli", "serve", str(toml), "--port", str(self.port)],
            stdout=glog,
            stderr=glog,
            env={**env.environ(), env.ADMIN_TOKEN: self.token},
        )
        try:
            assert self.backend is not None
            await asyncio.to_thread(
                wait_http, f"http://127.0.0.1:{self.backend_port}/v2/health/ready", self.backend
            )
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{self.port}/v2/health/ready", self.gateway)
            await self._settled()
            self.console.print(
                f"[bold]console: http://127.0.0.1:{self.port}/[/] (live for the whole run; "
                f"--keep-serving keeps it after)\n[dim]heavy tier on :{self.backend_port}; logs in "
                f"{self.data_dir}[/]"
            )
            summary = await self._traffic(live)
            summary["audits_opened"] = await self._audits()
            summary["shadow"] = await self._shadow()
            summary["monitor"] = {m: await self._monitor(m) for m in ("churn", "recs")}
            summary["gateway_loop_lag_max_ms"] = await self._loop_lag()
            summary["load_average"] = round(os.getloadavg()[0], 2)
            summary["cores"] = os.cpu_count()
            if self.keep_serving:
                print_summary(Console(), summary)
                self.console.print(
                    f"\n[bold]The gateway keeps serving[/] at http://127.0.0.1:{self.port} (console at /); "
                    f"in another shell: export FAILSOFT_URL=http://127.0.0.1:{self.port} "
                    f"FAILSOFT_ADMIN_TOKEN={self.token}; then `failsoft audits list`. Ctrl-C stops it."
                )
                await asyncio.Event().wait()
        finally:
            for proc in (self.gateway, self.backend):
                if proc is not None and proc.poll() is None:
                    proc.terminate()  # the gateway's graceful stop writes out its prediction log
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        store = open_store(f"sqlite:///{self.data_dir / 'state' / 'failsoft.db'}")
        try:
            summary["logged_predictions"] = store.count_predictions()
            summary["logged_shadow_answers"] = store.count_predictions(shadow=True)
        finally:
            store.close()
        return summary

    async def _loop_lag(self) -> float | None:
        """The longest the gateway's event loop ran late (a stall there is what a late answer comes from)."""
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.port}/metrics") as r:
            text = await r.text()
        for family in text_string_to_metric_families(text):
            if family.name == "failsoft_event_loop_lag_max_seconds" and family.samples:
                return round(family.samples[0].value * 1000.0, 1)
        return None

    async def _audits(self) -> int:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.port}/v1/audits") as r:
            doc = await r.json()
        for item in doc["audits"]:
            self.console.print(
                f"[yellow]audit item {item['id']}[/]: {item['model']} in fallback "
                f"({item['kind']}); `failsoft audits show {item['id']}` shows it while the gateway runs"
            )
        return len(doc["audits"])

    async def _settled(self, within_s: float = 15.0) -> None:
        """Until the gateway's log writer has its database open: ready answers as soon as the models are
        loaded, while the writer process is still starting (on a small machine, starting it and the traffic
        at once competes for the same cores)."""
        end = time.monotonic() + within_s
        url = f"http://127.0.0.1:{self.port}/metrics"
        async with aiohttp.ClientSession() as s:
            while time.monotonic() < end:
                async with s.get(url) as r:
                    if "failsoft_store_up 1.0" in await r.text():
                        return
                await asyncio.sleep(0.05)

    async def _traffic(self, live: bool) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=CONCURRENCY * 2)
        async with aiohttp.ClientSession(connector=connector) as session:
            t0 = time.monotonic()
            stop_at = t0 + self.duration
            tasks = [asyncio.create_task(self.worker(session, i, t0, stop_at)) for i in range(CONCURRENCY)]
            faults = asyncio.create_task(self.faults_loop(session, t0))
            labels = asyncio.create_task(self.labels_loop(session))
            with (
                Live(self.table(0), console=self.console, refresh_per_second=4, transient=False)
                if live
                else contextlib.nullcontext() as view
            ):
                last_line = 0.0
                while not all(t.done() for t in tasks):
                    await asyncio.sleep(0.25)
                    elapsed = time.monotonic() - t0
                    if view is not None:
                        view.update(self.table(min(elapsed, self.duration)))
                    elif elapsed - last_line >= 5:
                        last_line = elapsed
                        s = self.stats
                        self.console.print(
                            f"{elapsed:5.1f}s backend={s.phase} requests={s.requests} "
                            f"non_2xx={s.non_2xx} degraded={s.degraded}"
                        )
            await asyncio.gather(*tasks)
            await stop(faults)
            await stop(labels)
            headers = {"authorization": f"Bearer {self.token}"}
            await self.send_labels(session, f"http://127.0.0.1:{self.port}/v1/labels", headers)
        return self.stats.summary()


def run_demo(
    duration: float = 30.0,
    port: int = 0,
    data_dir: str = "failsoft-demo",
    faults: bool = True,
    as_json: bool = False,
    keep_serving: bool = False,
) -> int:
    console = Console(stderr=True)
    path = Path(data_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    # Each run starts from a clean state: earlier runs' logs, health and open audit items would mix in.
    shutil.rmtree(path / "state", ignore_errors=True)
    demo = Demo(duration, port, path, faults, console)
    demo.keep_serving = keep_serving
    live = console.is_terminal and not as_json and not env.in_ci()
    try:
        summary = asyncio.run(demo.run(live))
    except RuntimeError as err:
        console.print(f"[red]demo failed: {err}[/] (see {path}/gateway.log and backend.log)")
        return 1
    except KeyboardInterrupt:
        console.print("stopped")
        return 0
    ok, said = verdict(summary)
    summary["verdict"] = said
    if as_json:
        print(json.dumps(summary))
    else:
        print_summary(Console(), summary)
        Console().print(f"\n[bold]{said}[/]")
        if summary.get("audits_opened"):
            console.print("[dim]The gateway has stopped: `failsoft demo --keep-serving` leaves it running to "
                          "look at its audit items and console.[/]")  # fmt: skip
    return 0 if ok else 1
