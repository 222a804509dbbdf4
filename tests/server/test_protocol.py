"""Both HTTP protocols on a real socket, failsoft's own edge (server/edge.py) and uvicorn's behind the
guard (server/protocol.py): slow heads and bodies time out, connections past the cap are refused at once,
and each refusal is the JSON error shape, counted. Then what the edge does itself: pipelined requests
answered in order, HEAD, a body over the limit refused from its length, 100-continue, keep-alive ends."""

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
from failsoft.server.edge import edge_protocol
from failsoft.server.http import JSON, Request, Response
from failsoft.server.protocol import Refusals, guarded_protocol
from failsoft.server.run import raise_fd_limit

SPEC = ServerSpec(
    header_timeout_s=0.3, body_timeout_s=0.3, keep_alive_s=0.3, max_connections=4, max_header_bytes=1024,
    max_body_bytes=10_000,
)  # fmt: skip


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


async def answer_ok(req: Request) -> Response:
    """The edge's App.answer here: "ok", or on /echo what it was asked."""
    if req.parts[0] == "echo":
        body = await req.body(SPEC.max_body_bytes)
        return 200, f"{req.method} {req.path} {len(body)}".encode(), JSON
    return 200, b"ok", []


@contextlib.asynccontextmanager
async def serving(port: int, http: str) -> AsyncIterator[tuple[Conns, Refusals]]:
    refusals = Refusals()
    protocol = (
        edge_protocol(answer_ok, SPEC, refusals) if http == "failsoft" else guarded_protocol(SPEC, refusals)
    )
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=protocol, lifespan="off", log_level="error"
    )  # fmt: skip
    srv = uvicorn.Server(config)
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        await asyncio.sleep(0.01)
    conns = Conns(port)
    yield conns, refusals
    for w in conns.writers:
        w.close()
        with contextlib.suppress(ConnectionError):
            await w.wait_closed()
    srv.should_exit = True
    await task


@pytest.fixture(params=["failsoft", "uvicorn"])
async def server(
    unused_tcp_port: int, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Conns, Refusals]]:
    async with serving(unused_tcp_port, request.param) as running:
        yield running


@pytest.fixture
async def edge(unused_tcp_port: int) -> AsyncIterator[tuple[Conns, Refusals]]:
    """failsoft's own edge alone, for what it does itself."""
    async with serving(unused_tcp_port, "failsoft") as running:
        yield running


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


async def test_at_the_cap_the_edge_sheds_the_least_progress_for_a_newcomer(
    edge: tuple[Conns, Refusals],
) -> None:
    """failsoft's edge (server/overload.py): connections that sent nothing make room for one that asks."""
    conns, refusals = edge
    held = [await conns.open() for _ in range(SPEC.max_connections)]
    await asyncio.sleep(0.05)
    busy_reader, busy = held[0]
    busy.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # one of them is served, kept alive, then idles
    assert (await read_answer(busy_reader))[0].startswith(b"HTTP/1.1 200")
    for _ in range(3):  # each stays open (kept alive) after its answer
        reader, writer = await conns.open()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await read_answer(reader))[0].startswith(b"HTTP/1.1 200")
    assert refusals.counts["shed"] == 3 and refusals.counts["503"] == 0
    await asyncio.sleep(0.05)
    alive = [r for r, _ in held if not r.at_eof()]
    assert alive == [busy_reader], "the three that never sent a byte were shed, not the one served"


async def test_the_guard_refuses_connections_past_the_cap_at_once(unused_tcp_port: int) -> None:
    """uvicorn's protocol behind the guard (``--http uvicorn``) refuses the newcomer with a 503."""
    async with serving(unused_tcp_port, "uvicorn") as (conns, refusals):
        await past_the_cap(conns, refusals)


async def past_the_cap(conns: Conns, refusals: Refusals) -> None:
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


async def read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One answer off a kept-alive connection: its head and its body (by its content-length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    return head, await asyncio.wait_for(reader.readexactly(length), 10)


async def test_pipelined_requests_are_answered_in_order(edge: tuple[Conns, Refusals]) -> None:
    reader, writer = await edge[0].open()
    head = b"POST /echo/%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    writer.write(b"".join(head % (i, i) + b"x" * i for i in range(1, 6)))  # five requests in one write
    for i in range(1, 6):
        head, body = await read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"date: " in head
        assert body == b"POST /echo/%d %d" % (i, i)


async def test_a_client_that_half_closes_gets_every_answer(edge: tuple[Conns, Refusals]) -> None:
    reader, writer = await edge[0].open()
    writer.write(b"".join(b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)))
    writer.write_eof()  # as `nc -N` does: the requests, then nothing more
    raw = await asyncio.wait_for(reader.read(), 10)  # to EOF: the server closes after the third
    assert raw.count(b"HTTP/1.1 200 OK\r\n") == 3
    at = [raw.index(b"GET /echo/%d 0" % i) for i in range(3)]
    assert at == sorted(at)  # in the order asked


async def test_head_has_no_body_and_connection_close_closes(edge: tuple[Conns, Refusals]) -> None:
    reader, writer = await edge[0].open()
    writer.write(b"HEAD /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(), 10)  # read to EOF: the server closed
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-length: 12" in head and b"connection: close" in head and body == b""


async def test_a_body_over_the_limit_is_refused_from_its_length(edge: tuple[Conns, Refusals]) -> None:
    reader, writer = await edge[0].open()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")  # and no body
    status, doc = await answer(reader)
    assert status == 413 and doc == {"error": "request body over 10000 bytes"}
    # a chunked body is counted as it comes
    reader, writer = await edge[0].open()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(3):
        writer.write(b"1000\r\n" + b"x" * 4096 + b"\r\n")
    assert (await answer(reader))[0] == 413


async def test_expect_continue_and_the_keep_alive_limit(edge: tuple[Conns, Refusals]) -> None:
    reader, writer = await edge[0].open()
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"abc")
    assert (await read_answer(reader))[1] == b"POST /echo 3"
    # idle past keep_alive_s: closed without a word (EOF), and not counted as a refusal
    assert await asyncio.wait_for(reader.read(), 10) == b""
    assert sum(edge[1].counts.values()) == 0


def test_the_descriptor_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        got = raise_fd_limit(100)
        assert got == (hard if hard != resource.RLIM_INFINITY else 164)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == got
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
