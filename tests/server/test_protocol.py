"""The connection guard (server/protocol.py) on a real socket: slow heads and bodies time out, connections
past the cap are refused at once, and each refusal is the JSON error shape, counted."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from failsoft.config import ServerSpec
from failsoft.server.protocol import Refusals, guarded_protocol
from failsoft.server.run import raise_fd_limit

SPEC = ServerSpec(header_timeout_s=0.3, body_timeout_s=0.3, max_connections=4, max_header_bytes=1024)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class Conns:
    """Client connections to the test server, all closed at the end."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writers: list[asyncio.StreamWriter] = []

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers.append(writer)
        return reader, writer


@pytest.fixture
async def server(unused_tcp_port: int) -> AsyncIterator[tuple[Conns, Refusals]]:
    refusals = Refusals()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=unused_tcp_port, http=guarded_protocol(SPEC, refusals),
        lifespan="off", log_level="error",
    )  # fmt: skip
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    conns = Conns(unused_tcp_port)
    yield conns, refusals
    for w in conns.writers:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()
    srv.should_exit = True
    await task


async def answer(reader: asyncio.StreamReader) -> tuple[int, Any]:
    raw = await asyncio.wait_for(reader.read(), 10)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if b"application/json" in head else body


async def test_a_slow_head_is_cut_off_with_408(server: tuple[Conns, Refusals]) -> None:
    conns, refusals = server
    reader, writer = await conns.open()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    status, doc = await answer(reader)
    assert status == 408 and "headers not received" in doc["error"]
    # a connection that sends nothing at all is closed the same way
    reader, writer = await conns.open()
    assert (await answer(reader))[0] == 408
    assert refusals.counts["408"] == 2


async def test_a_slow_body_is_cut_off_with_408(server: tuple[Conns, Refusals]) -> None:
    conns, refusals = server
    reader, writer = await conns.open()
    assert refusals.counts["408"] == 0
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    status, doc = await answer(reader)
    assert status == 408 and "body not received" in doc["error"]


async def test_connections_past_the_cap_are_refused_at_once(server: tuple[Conns, Refusals]) -> None:
    conns, refusals = server
    held = [await conns.open() for _ in range(SPEC.max_connections)]
    await asyncio.sleep(0.05)
    reader, _ = await conns.open()
    status, doc = await answer(reader)
    assert status == 503 and "4 connections" in doc["error"]
    assert refusals.counts["503"] == 1
    for _, w in held:
        w.close()
    await asyncio.sleep(0.1)
    # once they are gone, a new client is served
    reader, writer = await conns.open()
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await answer(reader))[0] == 200
    assert "failsoft_connections_refused_total" in "".join(
        f"{m.name}_total" for m in refusals.metrics()
    )  # fmt: skip


async def test_a_good_request_is_untouched(server: tuple[Conns, Refusals]) -> None:
    conns, _ = server
    reader, writer = await conns.open()
    body = b"x" * 5000  # a body bigger than the head limit is fine: the limit is the head's
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n" + body)
    assert await answer(reader) == (200, b"ok")


def test_the_descriptor_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_fd_limit(100)
        assert got == (hard if hard != resource.RLIM_INFINITY else 164)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
