"""A replica's stop, as a load balancer needs it: SIGTERM turns /v2/health/ready to 503 at once, answers
go on for ``[server] drain_s`` (each saying ``Connection: close``), then the process stops, every answer
logged, exit 0; the supervisor of ``--workers N`` relays it. ``--workers auto`` counts the container's CPU
quota."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from failsoft.demo.procs import free_port, serve_command, wait_http
from failsoft.server.lifecycle import Lifecycle
from failsoft.server.workers import cores
from failsoft.store import open_store
from tests.portfolios import default_tier, model, python_tier, write

DRAIN_S = 3.0


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_drain_starts_once_and_ends_after_drain_s() -> None:
    clock = Clock()
    life = Lifecycle(2.0, clock)
    assert not life.draining and not life.drained()
    assert life.drain() and life.draining
    assert not life.drain(), "a second SIGTERM does not start it again"
    clock.t += 1.9
    assert not life.drained()
    clock.t += 0.2
    assert life.drained()
    assert not Lifecycle(0.0, clock).drain(), "drain_s 0: the stop starts at once"


@pytest.mark.parametrize(
    ("cpu_max", "most"), [("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", None), ("", None)]
)
def test_workers_auto_counts_the_containers_cpu_quota(tmp_path: Path, cpu_max: str, most: int | None) -> None:
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    free = cores(tmp_path / "absent")
    assert cores(path) == (min(free, most) if most else free)


def answered_during(url: str, stop: asyncio.Event, statuses: list[int]) -> asyncio.Task[int]:
    """Requests from two clients on keep-alive connections until ``stop``; how many were answered."""

    async def run() -> int:
        answered = 0

        async def client(session: aiohttp.ClientSession, k: int) -> None:
            nonlocal answered
            i = 0
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.post(url, json={"inputs": {"x": (k + i) % 10}}) as r:
                        await r.read()
                        statuses.append(r.status)
                        answered += r.status == 200
                i += 1
                await asyncio.sleep(0.005)

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(client(session, k) for k in range(2)))
        return answered

    return asyncio.create_task(run())


def ready_status(port: int) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/v2/health/ready")
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("connection")
    finally:
        conn.close()


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_sigterm_drains_then_stops_with_every_answer_logged(tmp_path: Path, workers: str) -> None:
    x = {"name": "x", "min": 0, "max": 10}
    m = model(python_tier("cpu", "tests.helpers:score"), default_tier(0.5), inputs=(x,), deadline_ms=50)
    path = write(tmp_path, {"m": m}, server={"drain_s": DRAIN_S}, store={"flush_ms": 50})
    port = free_port()
    argv = serve_command(path, port, "--workers", workers, log_level="info")
    with (tmp_path / "gw.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/v2/health/ready", proc)
        stop, statuses = asyncio.Event(), []
        traffic = answered_during(f"http://127.0.0.1:{port}/v1/models/m/predict", stop, statuses)
        await asyncio.sleep(0.5)
        before = len(statuses)
        proc.send_signal(signal.SIGTERM)  # as Kubernetes does: to the process, not its group
        signalled = time.monotonic()
        # not ready at once (each worker draining), while the process still answers predictions
        seen: list[tuple[int, str | None]] = []
        while time.monotonic() - signalled < DRAIN_S - 0.5:
            seen.append(await asyncio.to_thread(ready_status, port))
            if seen[-1][0] == 503:
                break
            await asyncio.sleep(0.05)
        flipped = time.monotonic() - signalled
        assert seen[-1] == (503, "close"), seen
        again = [await asyncio.to_thread(ready_status, port) for _ in range(4)]  # whichever worker answers
        assert again == [(503, "close")] * 4, again
        await asyncio.sleep(0.5)
        assert proc.poll() is None, "it keeps answering through the drain"
        during = len(statuses) - before
        rc = await asyncio.to_thread(proc.wait, DRAIN_S + 30)
        stopped = time.monotonic() - signalled
        stop.set()
        answered = await traffic
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    said = (tmp_path / "gw.log").read_text()
    assert rc == 0, said[-3000:]
    assert flipped < DRAIN_S - 0.5 and stopped >= DRAIN_S, (flipped, stopped)
    assert during > 0 and set(statuses) == {200}, "answers went on, none refused, through the drain"
    assert '"event": "draining"' in said and "Traceback" not in said, said[-3000:]
    store = open_store(f"sqlite:///{tmp_path / 'state' / 'failsoft.db'}")
    try:
        ids = [r[1] for batch in store.iter_predictions() for r in batch]
    finally:
        store.close()
    assert len(ids) == answered and len(set(ids)) == answered, "every answer logged, once"
