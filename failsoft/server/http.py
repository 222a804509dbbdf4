"""What both HTTP surfaces share: the request as the handlers see it, reading a bounded body, and the one
map from errors to statuses (domain errors carry no status; this is where they get one)."""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from failsoft.errors import (
    AlreadyPrimary,
    AuditError,
    ConfigError,
    InvalidRequest,
    NoSuchAudit,
    NothingToUndo,
    PolicyNotMet,
    PromotionError,
    UnknownCandidate,
    UnknownModel,
)
from failsoft.server.body import BodyTooLarge, inflate
from failsoft.store import StoreRejected

log = logging.getLogger("failsoft.server")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, bytes, Headers]

encode = msgspec.json.Encoder().encode
JSON: Headers = [(b"content-type", b"application/json")]


TooLarge = BodyTooLarge  # the body is over [server] max_body_bytes, as sent or once decompressed


class NotOffered(Exception):
    """A route of a protocol extension failsoft does not offer (Triton's model configuration, statistics,
    repository): a 501 that says so, not an unknown model."""


class Unauthorized(Exception):
    """No valid bearer token."""


class Forbidden(Exception):
    """The control plane is closed: no token exists at all."""


class Unavailable(Exception):
    """The change could not be recorded (the store is down): nothing was changed."""


class MethodNotAllowed(Exception):
    """The path exists, not with this method; ``allowed``: the methods it takes (the ``Allow`` header)."""

    def __init__(self, *allowed: str) -> None:
        super().__init__(", ".join(allowed))
        self.allowed = tuple(allowed) + (("HEAD",) if "GET" in allowed and "HEAD" not in allowed else ())


class NoRoute(Exception):
    pass


class ClientGone(Exception):
    """The client went away (or the connection guard closed it) before its body arrived."""


# The first class an error is an instance of gives its status (subclasses before their bases).
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidRequest, 400),
    (StoreRejected, 400),
    (RecursionError, 400),
    (NoSuchAudit, 404),
    (AuditError, 400),
    (UnknownModel, 404),
    (UnknownCandidate, 404),
    (AlreadyPrimary, 409),
    (PolicyNotMet, 409),
    (NothingToUndo, 409),
    (PromotionError, 400),
    (NoRoute, 404),
    (MethodNotAllowed, 405),
    (TooLarge, 413),
    (Unauthorized, 401),
    (Forbidden, 403),
    (Unavailable, 503),
    (NotOffered, 501),
    (ConfigError, 422),  # the gateway's own file is wrong (a reload): nothing was changed
)


def error_response(err: BaseException, method: str, path: str, max_body: int) -> Response:
    """The JSON error answer for ``err``; a 500 (logged) for anything not in ``STATUS``."""
    status = next((code for kind, code in STATUS if isinstance(err, kind)), 500)
    doc: dict[str, Any] = {"error": str(err)}
    headers = JSON
    if status == 500:
        log.error("request %s %s failed", method, path, exc_info=err)
        doc = {"error": "internal error; see the server log"}
    elif isinstance(err, StoreRejected):
        doc = {"error": f"the store refused the values: {err}"}
    elif isinstance(err, RecursionError):
        doc = {"error": "malformed request: nested too deep"}
    elif isinstance(err, PolicyNotMet):
        doc["failing"] = err.failing
    elif isinstance(err, PromotionError):
        doc["failing"] = None
    elif isinstance(err, TooLarge):
        doc = {"error": f"request body over {max_body} bytes"}
    elif isinstance(err, MethodNotAllowed):
        allow = ", ".join(err.allowed)
        doc = {"error": f"{method} not allowed on {path}: use {' or '.join(err.allowed)}"}
        headers = [*JSON, (b"allow", allow.encode())]
    elif isinstance(err, NoRoute):
        doc = {"error": f"no route {path}"}
    elif isinstance(err, Unauthorized):
        headers = [*JSON, (b"www-authenticate", b"Bearer")]
    return status, encode(doc), headers


class Request:
    """One request as a handler sees it: the path's segments, the route's parameters, the body on demand
    (read from the ASGI ``receive`` or, from failsoft's own HTTP edge, already read and bounded)."""

    __slots__ = ("_body", "headers", "method", "params", "parts", "path", "query_string", "receive")

    def __init__(
        self,
        method: str,
        path: str,
        raw_path: bytes | None,
        query_string: bytes,
        headers: Headers,
        receive: Receive | None = None,
        body: bytes | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.parts = segments(path, raw_path)
        self.query_string = query_string
        self.headers = headers
        self.receive = receive
        self._body = body
        self.params: dict[str, str] = {}

    @classmethod
    def of_scope(cls, scope: Scope, receive: Receive) -> Request:
        return cls(
            scope["method"], scope["path"], scope.get("raw_path"), scope.get("query_string", b""),
            scope["headers"], receive,
        )  # fmt: skip

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return bytes(value)
        return None

    def query(self) -> dict[str, str]:
        raw = self.query_string.decode("ascii", "replace")
        return {k: v[-1] for k, v in urllib.parse.parse_qs(raw).items()}

    async def body(self, max_body: int) -> bytes:
        body = self._body
        if body is None:
            body = await self._receive_body(max_body)
        elif len(body) > max_body:
            raise TooLarge
        encoding = self.header(b"content-encoding")
        return body if encoding is None else inflate(body, encoding, max_body)

    async def _receive_body(self, max_body: int) -> bytes:
        length = self.header(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body:
            raise TooLarge
        assert self.receive is not None
        chunks = []
        size = 0
        more = True
        while more:
            # A body slower than [server] body_timeout_s is cut off by the connection guard: a disconnect.
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_body:
                raise TooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def segments(path: str, raw: bytes | None) -> list[str]:
    """The path's segments, each percent-decoded on its own: ``/v1/models/x%2Fpredict`` names the model
    ``x/predict`` rather than routing to predict."""
    if raw is None or b"%" not in raw:
        return path.strip("/").split("/")
    return [urllib.parse.unquote(p) for p in raw.decode("ascii", "replace").strip("/").split("/")]


def conditional(req: Request, identity: bytes, doc: Any) -> Response:
    """``doc`` as JSON with an ETag made from ``identity`` (what the answer says, not when it was asked);
    a 304 without content to an ``If-None-Match`` naming that ETag (weak or strong) or ``*``."""
    etag = b'"%s"' % hashlib.blake2b(identity, digest_size=8).hexdigest().encode()
    headers: Headers = [(b"etag", etag), (b"cache-control", b"no-cache")]
    given = req.header(b"if-none-match")
    tags = [t.strip().removeprefix(b"W/") for t in given.split(b",")] if given else []
    if etag in tags or b"*" in tags:
        return 304, b"", headers
    return 200, encode(doc), [*JSON, *headers]


def need(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed(allowed)
