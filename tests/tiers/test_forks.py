"""Workers forked by the fork server: niced, the server's children, killed and seen to exit through their
pidfd; a server that dies is started again; one that cannot start leaves workers started afresh."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from failsoft import Portfolio
from failsoft.tiers import forks, pool
from tests.portfolios import default_tier, model, python_tier, write

pytestmark = pytest.mark.skipif(not forks.AVAILABLE, reason="the fork server needs pidfds (Linux)")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[forks.ForkServer]:
    """A fork server of the test's own (not the process's), closed after it."""
    own = forks.ForkServer(pool.BOOT, pool.START_TIMEOUT_S)
    monkeypatch.setattr(pool, "FORKS", own)
    yield own
    own.close()


def portfolio(tmp_path: Path, target: str = "tests.helpers:score") -> Portfolio:
    iso = python_tier("iso", target, run="process", processes=2, timeout_ms=2000)
    models = {"m": model(iso, default_tier(0.5), deadline_ms=3000)}
    return Portfolio.from_toml(write(tmp_path, models, store={"log_predictions": False}))


def workers(p: Portfolio) -> list[pool.Worker]:
    return list(p.chains["m"].tiers[0].backend._pool._idle)  # type: ignore[attr-defined]


async def all_ready(p: Portfolio) -> None:
    end = time.monotonic() + 60
    while len(workers(p)) < 2:
        assert time.monotonic() < end, "the workers did not come back"
        await asyncio.sleep(0.01)


async def test_workers_are_the_servers_niced_children_and_answer(
    tmp_path: Path, server: forks.ForkServer
) -> None:
    async with portfolio(tmp_path) as p:
        assert (await p.predict("m", {"x": 3.0})).outputs == 0.3
        assert server._proc is not None
        forked = workers(p)
        for w in forked:
            assert isinstance(w.proc, forks.Forked)
            child = psutil.Process(w.proc.pid)
            assert child.ppid() == server._proc.pid != os.getpid()
            assert child.nice() == pool.NICE
    assert len(forked) == 2
    for w in forked:  # closed: each exited, its pidfd closed, and the server reaped it
        assert w.proc.returncode == -1 and w.proc.pidfd == -1  # type: ignore[union-attr]
    end = time.monotonic() + 10
    while any(psutil.pid_exists(w.proc.pid) for w in forked):
        assert time.monotonic() < end, "a worker was not reaped"
        await asyncio.sleep(0.02)


async def test_a_killed_worker_is_replaced_by_another_fork(tmp_path: Path, server: forks.ForkServer) -> None:
    async with portfolio(tmp_path, "tests.helpers:die") as p:
        await all_ready(p)
        first = {w.proc.pid for w in workers(p)}
        o = await p.predict("m", {"x": 9.0})  # the worker exits mid-call
        assert o.tier == "default" and "died" in o.skips[0].detail
        await all_ready(p)
        assert {w.proc.pid for w in workers(p)} - first, "a new worker"
        assert (await p.predict("m", {"x": 1.0})).tier == "iso"


async def test_a_server_that_dies_is_started_again(tmp_path: Path, server: forks.ForkServer) -> None:
    async with portfolio(tmp_path, "tests.helpers:die") as p:
        await all_ready(p)
        assert server._proc is not None
        dead = server._proc.pid
        server._proc.kill()
        server._proc.wait()
        assert (await p.predict("m", {"x": 9.0})).tier == "default"  # its worker dies; a new one is asked
        await all_ready(p)
        assert server._proc is not None and server._proc.pid != dead
        assert all(isinstance(w.proc, forks.Forked) for w in workers(p))
        assert (await p.predict("m", {"x": 1.0})).tier == "iso"


async def test_a_server_that_cannot_start_leaves_workers_started_afresh(
    tmp_path: Path,
    server: forks.ForkServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(server, "boot", "import sys; sys.exit(1)")
    async with portfolio(tmp_path) as p:
        assert (await p.predict("m", {"x": 3.0})).outputs == 0.3
        assert all(isinstance(w.proc, pool.Spawned) for w in workers(p))
    assert server.broken and '"event": "fork_server_failed"' in caplog.text
