"""failsoft's own HTTP/1.1 edge: httptools parses the request in C, the whole request goes straight to
``App.answer`` (no ASGI messages, no per-request receive/send machinery), and the answer leaves in one
write. uvicorn still runs the process around it (sockets, lifespan, signals, graceful shutdown), which
finds this protocol through ``uvicorn.Config(http=...)``; ``failsoft serve --http uvicorn`` serves the same
App through uvicorn's own protocol instead (server/protocol.py).

What a server facing clients needs is here too, as in the guard of uvicorn's protocol:
- the request head is bounded in bytes and in header count (431), a body over ``max_body_bytes`` is
  refused as soon as its length is known (413);
- a request's head must arrive within ``header_timeout_s`` of the connection opening or of the request's
  first byte, its body within ``body_timeout_s`` of its head (408), an idle keep-alive connection is closed
  after ``keep_alive_s``: one sweeper task per process looks at every connection a few times a second, so
  no timer is armed per request;
- the connection cap is taken from the descriptor limit; near it the timeouts shrink, and at it the
  connection making the least progress is closed for a new one (server/overload.py);
- a request the parser cannot read gets a 400; pipelined requests are answered in order;
- a graceful stop closes idle connections and lets requests in flight finish.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httptools

from failsoft.config import ServerSpec
from failsoft.server.http import JSON, Headers, Request, Response, TooLarge, error_response
from failsoft.server.lifecycle import Lifecycle
from failsoft.server.overload import least_progress, timeout_scale
from failsoft.server.protocol import Refusals, Refusing

__all__ = ["EdgeProtocol", "Limits", "edge_protocol"]

log = logging.getLogger("failsoft.server")

STATUS_LINES = {s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode()) for s in http.HTTPStatus}
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _head(headers: Headers) -> bytes:
    """Header lines as they are written."""
    return b"".join(n + b": " + v + b"\r\n" for n, v in headers)


JSON_HEAD = _head(JSON)  # the common answer's headers, made once


class _Date:
    """The Date header, formatted once a second."""

    second = 0
    header = b""

    @classmethod
    def now(cls) -> bytes:
        t = int(time.time())
        if t != cls.second:
            cls.second = t
            cls.header = b"date: %s\r\n" % email.utils.formatdate(t, usegmt=True).encode()
        return cls.header


Answer = Callable[[Request], Awaitable[Response | None]]


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may hold and how long it may take, from ``[server]``; made once per server."""

    max_head: int
    max_headers: int
    max_body: int
    header_timeout: float
    body_timeout: float
    keep_alive: float
    max_connections: int
    sweep_s: float  # how often the sweeper looks at every connection
    too_large: bytes  # the 413, made once

    @classmethod
    def of(cls, spec: ServerSpec) -> Limits:
        header_timeout, body_timeout = spec.header_timeout_s, spec.body_timeout_s
        keep_alive = spec.keep_alive_s
        status, body, headers = error_response(TooLarge(), "", "", spec.max_body_bytes)
        too_large = b"%s%scontent-length: %d\r\nconnection: close\r\n\r\n%s" % (
            STATUS_LINES[status],
            _head(headers),
            len(body),
            body,
        )
        return cls(
            max_head=spec.max_header_bytes,
            max_headers=spec.max_headers,
            max_body=spec.max_body_bytes,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            keep_alive=keep_alive,
            max_connections=spec.max_connections,
            sweep_s=min(1.0, max(0.05, min(header_timeout, body_timeout, keep_alive) / 4)),
            too_large=too_large,
        )


def edge_protocol(
    answer: Answer, spec: ServerSpec, refusals: Refusals, life: Lifecycle | None = None
) -> type[EdgeProtocol]:
    """The protocol class answering with ``answer`` (``App.answer``) under ``spec``'s limits, in ``life``
    (draining: every connection closes after its next answer); uvicorn makes one per connection."""
    bound = {"limits": Limits.of(spec), "answer": staticmethod(answer), "refusals": refusals,
             "life": life or Lifecycle()}  # fmt: skip
    return type("BoundEdgeProtocol", (EdgeProtocol,), bound)


class EdgeProtocol(Refusing, asyncio.Protocol):
    """One connection. Its server's limits, answer and refusal counts are bound to a subclass of it by
    ``edge_protocol`` (uvicorn makes an instance per connection from the class it is given); the limits
    read on every request are copied to the connection when it is made."""

    limits: Limits
    answer: Answer
    life: Lifecycle

    def __init__(self, config: Any, server_state: Any, app_state: Any = None, _loop: Any = None) -> None:
        self.loop = _loop or asyncio.get_event_loop()
        self.state = server_state
        self.connections: set[Any] = server_state.connections
        limits = self.limits
        self.max_head, self.max_headers, self.max_body = limits.max_head, limits.max_headers, limits.max_body
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._draining = False  # refused: the answer is written, what still comes is dropped
        self._in_head = True  # a request's head is awaited (the connection's first, or the next one's)
        self._idle = False  # answered, nothing of a next request yet: the keep-alive limit applies
        self._head_bytes = 0
        self._since = 0.0  # loop time the current state began
        self._busy = False  # an answer is being made
        self._closing = False  # close once the answer in the making is written
        self._eof = False  # the client half-closed: close once every request it sent is answered
        self._pipeline: collections.deque[tuple[Request, bool]] = collections.deque()
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._length: bytes | None = None  # the content-length header's value
        self._expect = False  # Expect: 100-continue
        self._body: list[bytes] = []
        self._size = 0

    # asyncio's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        most = self.limits.max_connections
        if len(self.connections) >= most:
            # the one making the least progress makes room (server/overload.py); if every one is busy
            # answering, the newcomer is refused
            victim = least_progress(self.connections, self.loop.time())
            if victim is None:
                self.refuse(503, f"the server holds its limit of {most} connections; retry")
                return
            victim.shed()
        self.connections.add(self)
        self._since = self.loop.time()
        if self.life.draining:  # answered, then closed: its client comes back through the balancer
            self._closing = True
        self.start_sweeper(self.connections, self.limits.sweep_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self._pipeline.clear()
        self._closing = True

    def eof_received(self) -> bool:
        # the client will send nothing more: what it asked is still answered, in order, then it closes
        if self._busy or self._pipeline:
            self._eof = True
            return True
        return False

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._closing = True  # answered as a plain request; nothing after it is HTTP/1.1
        except httptools.HttpParserError as err:
            self.refuse(400, f"malformed HTTP request: {err}")
            return
        if self._in_head and self._head_bytes > self.max_head and not self._draining:
            self.refuse(431, f"request line and headers over {self.max_head} bytes")

    def pause_writing(self) -> None:
        self.transport.pause_reading()  # a client that does not read gets nothing more answered

    def resume_writing(self) -> None:
        if not self._pipeline:
            self.transport.resume_reading()

    def drain(self) -> None:
        """The process drains (server/lifecycle.py): this connection closes after its next answer, which
        says ``Connection: close``; its client's next request goes through the load balancer again."""
        self._closing = True

    def shutdown(self) -> None:
        """A graceful stop (uvicorn calls it): idle connections close, busy ones after their answer."""
        if self._busy:
            self._closing = True
        else:
            self.transport.close()

    # httptools' side

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._length = None
        self._expect = False
        self._body = []
        self._size = 0
        self._in_head = True
        self._idle = False
        self._since = self.loop.time()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        self._headers.append((name, value))
        if name == b"content-length":
            self._length = value
        elif name == b"expect":
            self._expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self.head_refused(self._url, self._headers, self.max_head, self.max_headers):
            return
        length = self._length
        if length is not None and length.isdigit() and int(length) > self.max_body:
            self._refuse_body()
            return
        if self._expect and not self._busy:
            self.transport.write(CONTINUE)
        self._since = self.loop.time()

    def on_body(self, body: bytes) -> None:
        if self._draining:
            return
        self._size += len(body)
        if self._size > self.max_body:
            self._refuse_body()
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._draining:
            return
        parser = self.parser
        raw_path = self._url
        query = b""
        if b"?" in raw_path or not raw_path.startswith(b"/"):  # a query, or an absolute URL
            url = httptools.parse_url(raw_path)
            raw_path, query = url.path or b"/", url.query or b""
        path = raw_path.decode("ascii", "replace")
        if "%" in path:
            path = urllib.parse.unquote(path)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        method = parser.get_method().decode("ascii")
        req = Request(method, path, raw_path, query, self._headers, body=body)
        keep = parser.should_keep_alive()
        self._in_head = True
        self._since = self.loop.time()
        if self._busy:  # pipelined: answered in order, and nothing more is read until it is
            self._pipeline.append((req, keep))
            self.transport.pause_reading()
            return
        self._start(req, keep)

    # answering

    def _start(self, req: Request, keep: bool) -> None:
        self._busy = True
        task = self.loop.create_task(self._serve(req, keep))
        tasks = self.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _serve(self, req: Request, keep: bool) -> None:
        try:
            reply = await self.answer(req)
        except BaseException:
            self.transport.close()
            self._busy = False
            raise
        self._write(req, reply, keep)

    def _write(self, req: Request, reply: Response | None, keep: bool) -> None:
        self._busy = False
        transport = self.transport
        if transport.is_closing():
            return
        if reply is None:  # cannot happen with the body read here; closing is the safe answer
            transport.close()
            return
        status, body, headers = reply
        keep = keep and not self._closing and not (self._eof and not self._pipeline)
        head = JSON_HEAD if headers is JSON else _head(headers)
        close = b"" if keep else b"connection: close\r\n"
        if status == 304:  # no content, and no Content-Length: it would have to be the 200's (RFC 9110)
            transport.write(b"%s%s%s%s\r\n" % (STATUS_LINES[status], _Date.now(), head, close))
        else:
            transport.write(
                b"%s%s%scontent-length: %d\r\n%s\r\n%s"
                % (
                    STATUS_LINES[status],
                    _Date.now(),
                    head,
                    len(body),
                    close,
                    b"" if req.method == "HEAD" else body,
                )
            )
        self.state.total_requests += 1
        if not keep:
            transport.close()
            return
        if self._pipeline:
            self._start(*self._pipeline.popleft())
            if not self._pipeline:
                transport.resume_reading()
        elif self._in_head and not self._head_bytes:
            self._idle = True
            self._since = self.loop.time()

    def progress(self) -> int:
        """Bytes received in the current state (an idle connection has none)."""
        if self._idle:
            return 0
        return self._head_bytes if self._in_head else self._size

    def shed(self) -> None:
        """Closed to make room for a new connection (the cap is reached and this one made the least
        progress): at once, nothing more read or answered."""
        self.connections.discard(self)
        self._draining = True
        self.refusals.counts["shed"] += 1
        self.transport.abort()

    def _refuse_body(self) -> None:
        self.linger(self.limits.too_large)

    def overdue(self, now: float) -> None:
        """Close the connection if it idled past the keep-alive limit; refuse it if its head, or its
        body, is later than the limits allow. Never while an answer is being made."""
        if self._draining or self._busy or self.transport.is_closing():
            return
        limits = self.limits
        waited = now - self._since
        # near the connection cap every timeout shrinks (server/overload.py)
        scale = timeout_scale(len(self.connections), limits.max_connections)
        if self._idle:
            if waited > limits.keep_alive * scale:
                self.transport.close()
        elif self._in_head:
            if waited > (most := limits.header_timeout * scale):
                self.refuse(408, f"request headers not received within {most:.3g} s")
        elif waited > (most := limits.body_timeout * scale):
            self.refuse(408, f"request body not received within {most:.3g} s")
