"""Overload that sheds the right connections: the cap taken from the descriptor limit, timeouts that
shrink near it, and at it the connection making the least progress closed for a new one. Proven with a
gateway whose descriptor limit is 1,024 and 1,100 connections sending their heads or bodies a byte at a
time (reconnecting when cut): a healthy client still gets every answer."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import subprocess
from pathlib import Path
from typing import Any

import pytest

from failsoft.demo.procs import free_port, serve_command, wait_http
from failsoft.server import overload
from failsoft.server.overload import effective_cap, least_progress, timeout_scale
from tests.portfolios import default_tier, model, python_tier, write


class Conn:
    def __init__(self, since: float, progress: int, busy: bool = False, draining: bool = False) -> None:
        self._since, self._progress, self._busy, self._draining = since, progress, busy, draining

    def progress(self) -> int:
        return self._progress

    def shed(self) -> None:
        pass


def test_timeouts_shrink_near_the_cap() -> None:
    assert timeout_scale(0, 1000) == timeout_scale(750, 1000) == 1.0
    assert timeout_scale(875, 1000) == pytest.approx(0.55)
    assert timeout_scale(1000, 1000) == pytest.approx(0.1) == timeout_scale(2000, 1000)


def test_the_least_progress_makes_room() -> None:
    now = 100.0
    healthy = Conn(99.99, 0)  # just connected
    trickling = Conn(90.0, 2)  # 10 s for 2 bytes: 5 s a byte
    idle = Conn(97.0, 0)  # 3 s since its last answer: 3 s for (counted as) one byte
    busy = Conn(0.0, 0, busy=True)  # its answer is being made: never
    assert least_progress([healthy, trickling, idle, busy], now) is trickling
    assert least_progress([healthy, idle, busy], now) is idle
    lingering = Conn(99.0, 0, draining=True)
    assert least_progress([healthy, trickling, lingering], now) is lingering
    assert least_progress([busy], now) is None


def test_the_cap_comes_from_the_descriptor_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(overload.resource, "getrlimit", lambda _: (1024, 1024))
    assert effective_cap(10_000) == 1024 - overload.FD_RESERVE
    assert effective_cap(500) == 500
    monkeypatch.setattr(overload.resource, "getrlimit", lambda _: (40, 40))
    assert effective_cap(10_000) == overload.MIN_CAP


async def slow(port: int, k: int, stop: asyncio.Event, opened: list[int]) -> None:
    """One attacker: a head (or, for odd k, a body) a byte at a time; cut, it connects again."""
    while not stop.is_set():
        writer = None
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            opened[0] += 1
            if k % 2:
                writer.write(
                    b"POST /v1/models/churn/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n"
                )
                drip = b"{"
            else:
                writer.write(b"POST /v1/models/churn/predict HTTP/1.1\r\n")
                drip = b"x"
            while not stop.is_set() and not reader.at_eof():
                writer.write(drip)
                await writer.drain()
                await asyncio.sleep(0.5)
        except OSError:
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()


async def healthy(port: int) -> tuple[int, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    body = b'{"inputs": {"x": 3}}'
    writer.write(b"POST /v1/models/churn/predict HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/1.1 ") else 0
    return status, raw[-200:].decode("latin-1")


@pytest.mark.timing
async def test_slow_connections_past_the_descriptor_limit_shut_no_healthy_client_out(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2400:
        pytest.skip(f"this test opens 1,100 connections and more: the hard descriptor limit is {hard}")
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (max(soft, 4096) if hard == resource.RLIM_INFINITY else hard, hard)
    )
    churn = model(
        python_tier("cpu", "tests.helpers:score"),
        default_tier(0.2),
        inputs=({"name": "x", "min": 0, "max": 10},),
    )
    path = write(tmp_path, {"churn": churn})
    port = free_port()

    def limit() -> None:  # the gateway's process may hold 1,024 descriptors, and cannot raise it
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    with (tmp_path / "gw.log").open("wb") as log:
        cmd = serve_command(path, port, log_level="info")
        gw = subprocess.Popen(cmd, stdout=log, stderr=log, preexec_fn=limit)
    stop = asyncio.Event()
    opened = [0]
    attackers: list[asyncio.Task[Any]] = []
    try:
        await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/v2/health/ready", gw)
        attackers = [asyncio.create_task(slow(port, k, stop, opened)) for k in range(1100)]
        await asyncio.sleep(3)  # all of them connected, trickling, at the cap
        answers = [await healthy(port) for _ in range(100)]
    finally:
        stop.set()
        for t in attackers:
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*attackers, return_exceptions=True)
        gw.terminate()
        gw.wait(30)
    said = (tmp_path / "gw.log").read_text()
    statuses = [s for s, _ in answers]
    assert statuses == [200] * 100, [a for a in answers if a[0] != 200][:3]
    assert opened[0] >= 1100, "every attacker got in"
    assert '"event": "connection_cap"' in said and '"cap": 960' in said, said[-2000:]
    assert "Traceback" not in said, said[-3000:]
