"""Serving goes on while the database is locked or down; afterwards every answer is logged exactly once.
Two replicas on one PostgreSQL agree on a health change made through either within 2 seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from failsoft.demo.procs import Proc, free_port
from failsoft.store import open_store
from tests.helpers import until
from tests.portfolios import default_tier, model, python_tier, write
from tests.store.conftest import PrivatePostgres

DEADLINE_MS = 50
# The gateway may close an answer a little past the deadline when its event loop wakes late (a busy core).
SLACK_MS = 5
LATE_LOOP_MS = 40
CLIENT_MS = 500
TOKEN = "test-admin-token-0123456789"
ALICE = "alice-token-0123456789abcdef"


def toml(tmp: Path, url: str | None, name: str = "portfolio.toml", poll_ms: int = 200) -> Path:
    store = {"url": url, "batch_size": 200, "flush_ms": 50, "poll_ms": poll_ms} if url else {}
    m = model(
        python_tier("cpu", "tests.helpers:score"),
        default_tier(0.5),
        inputs=({"name": "x", "min": 0, "max": 10},),
        output={"type": "float"},
        deadline_ms=DEADLINE_MS,
    )
    return write(tmp / name, {"m": m}, data_dir=str(tmp / "state"), **({"store": store} if store else {}))


def gateway(path: Path, log: Path) -> Proc:
    env_args = [sys.executable, "-m", "failsoft.cli", "serve", str(path), "--log-level", "warning"]
    return Proc(env_args, "/v2/health/ready", log)


async def traffic(url: str, during: Callable[[], Awaitable[None]]) -> tuple[int, list[float], set[int]]:
    """Requests from 4 clients until ``during`` returns; (answers, latencies, statuses). The latencies are
    the gateway's own (each answer's latency_ms); the client's clock is bounded only generously
    (``CLIENT_MS``), since on a loaded 2-core machine it measures its own scheduling too."""
    answers, latencies, statuses = 0, [], set()
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession, seed: int) -> None:
        nonlocal answers
        i = 0
        while not stop.is_set():
            t = time.perf_counter()
            async with session.post(url, json={"inputs": {"x": (seed + i) % 10}}) as r:
                raw = await r.read()
                statuses.add(r.status)
                if r.status == 200:
                    answers += 1
                    latencies.append(json.loads(raw)["latency_ms"])
            assert (time.perf_counter() - t) * 1000 < DEADLINE_MS + CLIENT_MS
            i += 1
            await asyncio.sleep(0.002)

    async with aiohttp.ClientSession() as session:
        tasks = [asyncio.create_task(client(session, k)) for k in range(4)]
        await during()
        stop.set()
        await asyncio.gather(*tasks)
    return answers, latencies, statuses


def logged(url: str, outcome: str) -> float:
    """The gateway's count of log records with ``outcome`` (written, spilled, ...)."""
    metrics = urllib.request.urlopen(url + "/metrics").read().decode()
    return float(metrics.split(f'failsoft_log_records_total{{outcome="{outcome}"}} ')[1].split()[0])


def assert_within_deadline(latencies: list[float]) -> None:
    ordered = sorted(latencies)
    assert ordered[int(0.99 * len(ordered))] < DEADLINE_MS + SLACK_MS, ordered[-5:]
    assert ordered[-1] < DEADLINE_MS + LATE_LOOP_MS, ordered[-5:]


def assert_logged_once(url: str, answers: int) -> None:
    store = open_store(url)
    try:
        ids = [r[1] for batch in store.iter_predictions() for r in batch]
    finally:
        store.close()
    assert len(ids) == answers, f"{len(ids)} logged for {answers} answers"
    assert len(set(ids)) == len(ids), "a prediction was logged twice"


@pytest.mark.timing
async def test_sqlite_locked_for_a_while(tmp_path: Path) -> None:
    db = tmp_path / "state" / "failsoft.db"
    gw = gateway(toml(tmp_path, None), tmp_path / "gw.log").start()
    url = f"sqlite:///{db}"

    async def lock_it() -> None:
        # Lock once the writer has written: the lock must meet a running writer, however slowly it started.
        await until(lambda: logged(gw.url, "written") > 0, timeout_s=30.0)
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        await asyncio.sleep(2.0)
        blocker.execute("COMMIT")
        blocker.close()
        await asyncio.sleep(1.0)

    try:
        answers, latencies, statuses = await traffic(gw.url + "/v1/models/m/predict", lock_it)
        spilled = logged(gw.url, "spilled")
    finally:
        gw.stop()
    assert statuses == {200} and answers > 500
    assert_within_deadline(latencies)
    assert spilled > 0, "the lock really forced records to the spill file"
    assert_logged_once(url, answers)


@pytest.mark.timing
async def test_postgres_stopped_and_started_under_traffic(
    tmp_path: Path, private_pg: PrivatePostgres
) -> None:
    gw = gateway(toml(tmp_path, private_pg.url), tmp_path / "gw.log").start()

    async def outage() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(private_pg.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(private_pg.start)
        await asyncio.sleep(1.5)

    try:
        answers, latencies, statuses = await traffic(gw.url + "/v1/models/m/predict", outage)
    finally:
        gw.stop()
    assert statuses == {200} and answers > 500
    assert_within_deadline(latencies)
    assert_logged_once(private_pg.url, answers)


def post(url: str, doc: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=json.dumps(doc).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def health_of(base: str) -> str:
    with urllib.request.urlopen(base + "/v1/models/m", timeout=5) as r:
        return str(json.loads(r.read())["health"])


@pytest.fixture(params=[200, 60_000], ids=["poll-200ms", "notify-only"])
def replicas(request: pytest.FixtureRequest, tmp_path: Path, pg_url: str) -> Iterator[tuple[Proc, Proc]]:
    """Two gateways on one PostgreSQL; polling every 200 ms, or every minute (so only NOTIFY can tell a
    replica of a change within the test's bound)."""
    poll_ms = request.param
    store = open_store(pg_url)
    store.connect()
    store._locked(
        lambda c: c.execute(
            "TRUNCATE predictions, model_state, state_events, episodes, audit_items, audit_actions"
        )
    )  # type: ignore[attr-defined]
    store.close()
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(f'alice = "{ALICE}"\n')
    os.environ["FAILSOFT_ADMIN_TOKEN"] = TOKEN
    os.environ["FAILSOFT_TOKENS_FILE"] = str(tokens)
    try:
        a = gateway(toml(tmp_path, pg_url, "a.toml", poll_ms), tmp_path / "a.log").start()
        b = gateway(toml(tmp_path, pg_url, "b.toml", poll_ms), tmp_path / "b.log").start()
    finally:
        del os.environ["FAILSOFT_ADMIN_TOKEN"], os.environ["FAILSOFT_TOKENS_FILE"]
    yield a, b
    a.stop()
    b.stop()


def converge(base: str, want: str, since: float) -> float:
    while time.monotonic() - since < 5:
        if health_of(base) == want:
            return time.monotonic() - since
        time.sleep(0.02)
    raise AssertionError(f"{base} never reached {want}")


def test_two_replicas_converge_within_a_second(replicas: tuple[Proc, Proc]) -> None:
    a, b = replicas
    assert post(a.url + "/v1/models/m/health", {"health": "quarantined"})[0] == 401, "no token: refused"
    assert health_of(a.url) == "live"
    t = time.monotonic()
    status, state = post(a.url + "/v1/models/m/health", {"health": "quarantined", "reason": "drift"}, TOKEN)
    assert status == 200 and state["health"] == "quarantined"
    assert converge(b.url, "quarantined", t) < 1.0
    _, out = post(b.url + "/v1/models/m/predict", {"inputs": {"x": 3}})
    assert out["reason"] == "quarantined" and out["tier"] == "default"
    t = time.monotonic()
    assert post(b.url + "/v1/models/m/health", {"health": "live"}, ALICE)[0] == 200
    assert converge(a.url, "live", t) < 1.0
    with urllib.request.urlopen(a.url + "/v1/models/m/events") as r:
        events = json.loads(r.read())["events"]
    assert [(e["value"], e["actor"]) for e in events] == [("live", "alice"), ("quarantined", "admin")]


async def test_without_a_configured_token_one_is_made_kept_private_and_required(tmp_path: Path) -> None:
    gw = gateway(toml(tmp_path, None), tmp_path / "gw.log").start()
    try:
        kept = tmp_path / "state" / "admin-token"
        token = kept.read_text().strip()
        assert kept.stat().st_mode & 0o777 == 0o600
        said = (tmp_path / "gw.log").read_text()
        assert token not in said and str(kept) in said, "a log file gets where the token is, not the token"
        assert post(gw.url + "/v1/models/m/health", {"health": "quarantined"})[0] == 401
        assert (
            post(gw.url + "/v1/models/m/health", {"health": "quarantined"}, "wrong-token-xxxxxxxx")[0] == 401
        )
        assert health_of(gw.url) == "live", "a refused request changed nothing"
        status, state = post(gw.url + "/v1/models/m/health", {"health": "quarantined"}, token)
        assert status == 200 and state["changed_by"] == "admin"
    finally:
        gw.stop()
    restarted = gateway(toml(tmp_path, None), tmp_path / "gw2.log").start()
    try:
        assert post(restarted.url + "/v1/models/m/health", {"health": "live"}, token)[0] == 200, (
            "kept across restarts"
        )
        assert token not in (tmp_path / "gw2.log").read_text(), "printed only when made"
    finally:
        restarted.stop()


def test_export_a_row_per_prediction_typed(tmp_path: Path) -> None:
    import json
    import subprocess

    import pyarrow as pa
    import pyarrow.parquet as pq

    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(url)
    store.connect()
    now = time.time()
    day = 86400
    singles = [(f"r{i}", f"q{i}", "m", "1", "cpu", "live", False, None, [0.5], None, 0.2, now - day * (i % 3))
               for i in range(300)]  # fmt: skip
    rows = [{"age": i, "plan": "gold" if i % 2 else "basic", "score": i / 10} for i in range(500)]
    answers = [i / 1000 for i in range(500)]
    batch = ("b1", "batch-1", "m", "1", "cpu", "live", True, "timeout", answers, rows, 3.5, now)
    store.insert_predictions([*singles, batch])
    out = tmp_path / "p.parquet"
    cmd = [sys.executable, "-m", "failsoft.cli", "export", "predictions", "--store", url, "--since", "36h",
           "--out", str(out), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    table = pq.read_table(out)
    assert table.num_rows == 700 and "700 predictions (201 requests)" in done.stdout
    types = {f.name: f.type for f in table.schema}
    assert types["output"] == pa.float64() and types["input_age"] == pa.int64()
    assert types["input_plan"] == pa.string() and types["input_score"] == pa.float64()
    assert types["ts"] == pa.timestamp("us", tz="UTC") and types["degraded"] == pa.bool_()
    got = table.filter(pa.compute.equal(table.column("request_id"), "batch-1")).to_pylist()
    assert [r["row"] for r in got] == list(range(500)) and [r["output"] for r in got] == answers
    assert got[7]["input_plan"] == "gold" and got[7]["degraded"] is True and got[7]["reason"] == "timeout"
    # a .csv name gets CSV, a .jsonl name JSON lines, another name a message
    base = cmd[:-3]
    csv_out = tmp_path / "p.csv"
    done = subprocess.run([*base, "--out", str(csv_out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    import csv

    with csv_out.open(newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0][:3] == ["record_id", "request_id", "row"] and lines[0][11:13] == ["output", "input_age"]
    assert len(lines) == 701
    back = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    seventh = [r for r in back if r["request_id"] == "batch-1"][7]
    assert seventh["input_plan"] == "gold" and seventh["degraded"] == "true"
    assert seventh["reason"] == "timeout"
    assert seventh["output"] == "0.007" and seventh["ts"].endswith("+00:00")
    assert next(r for r in back if r["request_id"] == "q0")["reason"] == "", "a missing value is empty"
    jsonl = tmp_path / "p.jsonl"
    done = subprocess.run([*base, "--out", str(jsonl)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    docs = [json.loads(line) for line in jsonl.read_text().splitlines()]
    last = [d for d in docs if d["request_id"] == "batch-1"][-1]
    assert len(docs) == 700 and last["input_age"] == 499 and last["ts"].endswith("+00:00")
    done = subprocess.run([*base, "--out", str(tmp_path / "p.x")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and ".parquet, .csv, .jsonl" in done.stderr
    done = subprocess.run([*cmd, "--model", "mm"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no predictions of it in the log (logged: m)" in done.stderr
    assert "did you mean 'm'?" in done.stderr


async def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(tmp_path: Path) -> None:
    import signal
    import subprocess

    gw = gateway(toml(tmp_path, None), tmp_path / "gw.log").start()
    assert gw.proc is not None

    def writer_pid() -> int:
        out = subprocess.run(
            ["pgrep", "-P", str(gw.proc.pid), "-f", "failsoft.store.writer"],  # type: ignore[union-attr]
            capture_output=True,
            text=True,
        ).stdout.split()
        return int(out[0]) if out else 0

    async def kill_writer() -> None:
        await asyncio.sleep(0.5)
        first = writer_pid()
        assert first, "a writer process runs beside the server"
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(1.5)
        assert writer_pid() not in (0, first), "a new writer took its place"

    try:
        answers, _, statuses = await traffic(gw.url + "/v1/models/m/predict", kill_writer)
        metrics = urllib.request.urlopen(gw.url + "/metrics").read().decode()
    finally:
        gw.stop()
    assert statuses == {200}
    assert "failsoft_log_writer_restarts_total 1.0" in metrics
    assert_logged_once(f"sqlite:///{tmp_path / 'state' / 'failsoft.db'}", answers)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
async def test_a_signal_to_the_whole_group_stops_gateway_and_writer_cleanly(tmp_path: Path, sig: str) -> None:
    """``kill %1`` in a shell, Ctrl-C in a terminal, a container's stop: the signal reaches the gateway and
    its log writer at once. The writer leaves the stopping to the gateway: no restart, every answer logged,
    nothing of the group left running."""
    import signal
    import subprocess

    from failsoft.demo.procs import wait_http

    port = free_port()
    argv = [sys.executable, "-m", "failsoft.cli", "serve", str(toml(tmp_path, None)), "--port", str(port)]
    with (tmp_path / "gw.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        answers, _, statuses = await traffic(
            f"http://127.0.0.1:{port}/v1/models/m/predict", lambda: asyncio.sleep(1.0)
        )
        os.killpg(proc.pid, getattr(signal, sig))
        proc.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    said = (tmp_path / "gw.log").read_text()
    assert statuses == {200} and answers > 0
    assert "log_writer_restarted" not in said and "Traceback" not in said, said[-2000:]
    # stopped cleanly: SIGTERM's is an orderly end (0); Ctrl-C's is said the way a shell expects (130)
    assert proc.returncode == {"SIGTERM": 0, "SIGINT": 130}[sig], said[-2000:]
    assert "Application shutdown complete" in said
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # nothing of the group is left: the writer ended with it
        os.killpg(proc.pid, 0)
    assert_logged_once(f"sqlite:///{tmp_path / 'state' / 'failsoft.db'}", answers)


def test_parquet_without_pyarrow_is_said_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plain install has no pyarrow: a .parquet export says so (and what needs nothing) before reading
    the log; CSV is written all the same (the walkthrough does it in a fresh virtualenv)."""
    import importlib.util

    from failsoft.cli import main

    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(url)
    store.connect()
    store.insert_predictions([("r1", "q1", "m", "1", "cpu", "live", False, None, [0.5], None, 0.2, 1e9)])
    store.close()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pyarrow" else real(n))
    export = ["export", "predictions", "--store", url, "--quiet", "--out"]
    assert main([*export, str(tmp_path / "p.parquet")]) == 2
    said = capsys.readouterr().err
    assert said.startswith("error: ") and "needs pyarrow: pip install 'failsoft[parquet]'" in said, said
    assert not (tmp_path / "p.parquet").exists() and not (tmp_path / "p.parquet.tmp").exists()
    assert main([*export, str(tmp_path / "p.csv")]) == 0
    assert (tmp_path / "p.csv").read_text().count("\n") == 2
