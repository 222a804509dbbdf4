"""The HTTP connection guard: uvicorn's httptools protocol with the limits a server facing clients needs.

uvicorn's own protocol bounds none of these, so one client could hold memory or file descriptors that
every other client needs:
- the request head (request line and headers) is bounded in bytes and in header count (431);
- a request's head must arrive within ``header_timeout_s`` of the connection opening or of the request's
  first byte, and its body within ``body_timeout_s`` of its head (408, then the connection is closed): a
  slow sender cannot hold a connection for ever;
- connections past ``max_connections`` are refused at once with a 503 and closed;
- a request the parser cannot read (a raw non-ASCII byte in the path, a bad Content-Length) gets a 400.
Every refusal is the JSON error shape of the app (``{"error": "..."}``), counted by ``Refusals``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from collections.abc import Iterator
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, Metric
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from failsoft.config import ServerSpec

__all__ = ["Refusals", "Refusing", "guarded_protocol"]

log = logging.getLogger("failsoft.server")
# Seconds a refused connection is read (and dropped) before it is closed, so the client gets the answer.
LINGER_S = 2.0
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large",
            503: b"Service Unavailable"}  # fmt: skip


class Refusals:
    """Connections refused by the guard, by status."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def metrics(self) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "failsoft_connections_refused",
            "Connections refused by the HTTP guard (400 malformed, 408 slow, 431 head too big, 503 full, "
            "shed: closed at the connection cap for a newer one, having made the least progress)",
            labels=["status"],
        )
        for status, n in sorted(self.counts.items()):
            c.add_metric([status], n)
        yield c


def _response(status: int, message: str) -> bytes:
    body = msgspec.json.encode({"error": message})
    return b"".join(
        (
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        )
    )


class Refusing:
    """Refusing a connection, for both HTTP protocols (this guard and server/edge.py): the JSON error
    answer, counted, logged at a rate that a flood cannot turn into a log storm, then a graceful close."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    refusals: Refusals
    sweeper: asyncio.Task[None] | None = None
    _draining: bool
    _head_bytes: int  # bytes received while the head is incomplete

    def refuse(self, status: int, message: str) -> None:
        if self._draining:
            return
        counts = self.refusals.counts
        count = counts[str(status)] = counts[str(status)] + 1
        if count in {1, 10, 100, 1000} or count % 10000 == 0:
            log.warning(json.dumps({"event": "connection_refused", "status": status, "reason": message,
                                    "count": count}))  # fmt: skip
        self.linger(_response(status, message))

    def head_refused(
        self, url: bytes, headers: list[tuple[bytes, bytes]], max_head: int, max_headers: int
    ) -> bool:
        """Refuse a request whose head is over the limits (431); True when refused."""
        # a chunk may carry a body after the head: the head's exact size decides
        if self._head_bytes > max_head and len(url) + sum(len(n) + len(v) + 4 for n, v in headers) > max_head:
            self.refuse(431, f"request line and headers over {max_head} bytes")
            return True
        self._head_bytes = 0
        if len(headers) > max_headers:
            self.refuse(431, f"more than {max_headers} headers")
            return True
        return False

    def start_sweeper(self, connections: set[Any], every_s: float) -> None:
        """One task per protocol class looks at every connection every ``every_s`` (``overdue``), while
        there are any: no timer is armed per request."""
        cls = type(self)
        if cls.sweeper is None or cls.sweeper.done():
            cls.sweeper = self.loop.create_task(
                _sweep(cls, connections, every_s), name="failsoft-http-sweeper"
            )

    def overdue(self, now: float) -> None:
        raise NotImplementedError

    def linger(self, response: bytes) -> None:
        """Answer, then close gracefully: closing a socket with unread bytes resets it, and the client
        would lose the answer. Half-close, read and drop what still comes, close at the client's EOF or
        after LINGER_S."""
        self._draining = True
        transport = self.transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()


async def _sweep(cls: type[Refusing], connections: set[Any], every_s: float) -> None:
    loop = asyncio.get_running_loop()
    while connections:
        await asyncio.sleep(every_s)
        now = loop.time()
        for conn in list(connections):
            if isinstance(conn, cls):
                conn.overdue(now)


def guarded_protocol(spec: ServerSpec, refusals_: Refusals) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol bound by ``spec``'s connection limits.

    The common request pays for two overridden callbacks and a few comparisons: no timer is armed per
    request. One sweeper task per server looks at every connection a few times a second and cuts those
    whose head or body is overdue.
    """
    max_head, max_headers = spec.max_header_bytes, spec.max_headers
    header_timeout, body_timeout = spec.header_timeout_s, spec.body_timeout_s
    max_connections = spec.max_connections
    sweep_s = min(1.0, max(0.05, min(header_timeout, body_timeout) / 4))

    class GuardedProtocol(Refusing, HttpToolsProtocol):
        sweeper = None
        refusals = refusals_

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._head_bytes = 0  # bytes received while the head is incomplete
            self._in_head = True
            self._since = 0.0  # when the current request (or the connection) began, loop time
            self._draining = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                self.transport = transport
                self.refuse(503, f"the server holds its limit of {max_connections} connections; retry")
                return
            super().connection_made(transport)
            self._since = self.loop.time()
            self.start_sweeper(self.connections, sweep_s)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.flow is None:  # refused before it was taken in
                return
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._draining:
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_head and not self._draining:
                self.refuse(431, f"request line and headers over {max_head} bytes")

        def send_400_response(self, msg: str) -> None:
            if self._draining:
                return
            refusals_.counts["400"] += 1
            self.linger(_response(400, f"malformed HTTP request: {msg}"))

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._since = self.loop.time()

        def on_headers_complete(self) -> None:
            self._in_head = False
            if not self.head_refused(self.url, self.headers, max_head, max_headers):
                super().on_headers_complete()

        def overdue(self, now: float) -> None:
            """Cut the connection if its head, or its body, is later than the limits allow."""
            if self._draining or self.transport is None or self.transport.is_closing():
                return
            waited = now - self._since
            if self._in_head:
                if waited > header_timeout:
                    self.refuse(408, f"request headers not received within {header_timeout:g} s")
            elif (
                waited > header_timeout + body_timeout
                and self.cycle is not None
                and self.cycle.more_body
                and not self.cycle.response_complete
            ):
                self.refuse(408, f"request body not received within {body_timeout:g} s")

    return GuardedProtocol
