"""The ASGI application: routing, body limits, and the one place errors become HTTP statuses.

Raw ASGI over msgspec rather than a framework: the request path is a handful of routes, and each
microsecond here is paid on every prediction (see bench/overhead.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import gc
import logging
import sys
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from failsoft.audit.actions import MISSING as MISSING_VALUE
from failsoft.audit.actions import act
from failsoft.chain import Chain
from failsoft.errors import AuditError, InvalidRequest, UnknownModel
from failsoft.labels import Label, LabelsRequest, save_labels
from failsoft.portfolio import Portfolio
from failsoft.server import oip
from failsoft.server.auth import Tokens
from failsoft.server.body import check_id, decode
from failsoft.server.dashboard import PAGE
from failsoft.shadow import deploy
from failsoft.store import StoreRejected, StoreUnavailable
from failsoft.types import Health, Outcome

log = logging.getLogger("failsoft.server")
# Seconds a thread may hold the interpreter lock while the event loop waits for it (Python: 0.005).
SWITCH_INTERVAL_S = 0.001

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_encode = msgspec.json.Encoder().encode
_JSON = [(b"content-type", b"application/json")]


class PredictRequest(msgspec.Struct):
    inputs: dict[str, Any] | list[Any]
    id: str | None = None


_decode_predict = msgspec.json.Decoder(PredictRequest).decode
_decode_infer = msgspec.json.Decoder(oip.InferRequest).decode


class AuditAction(msgspec.Struct):
    action: str = ""
    comment: str = ""
    value: Any = MISSING_VALUE
    for_s: float | None = None


class HealthChange(msgspec.Struct):
    health: Health
    reason: str = ""


class Flip(msgspec.Struct):
    candidate: str = ""
    reason: str = ""
    force: bool = False


SHADOW_ROUTES = {"shadows", "history", "promote", "rollback"}
_decode_health = msgspec.json.Decoder(HealthChange).decode
_decode_action = msgspec.json.Decoder(AuditAction).decode
_decode_flip = msgspec.json.Decoder(Flip).decode


class TooLarge(Exception):
    pass


class Unauthorized(Exception):
    pass


class Forbidden(Exception):
    pass


class Unavailable(Exception):
    pass


class MethodNotAllowed(Exception):
    pass


class ClientGone(Exception):
    """The client went away (or the connection guard closed it) before its body arrived."""


class App:
    def __init__(self, portfolio: Portfolio, tokens: Tokens | None = None) -> None:
        self.portfolio = portfolio
        self.max_body = portfolio.spec.server.max_body_bytes
        self.max_batch = portfolio.spec.server.max_batch
        # State-changing endpoints need ``Authorization: Bearer <token>``; with no token they are closed.
        self.tokens = tokens or Tokens({})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.portfolio.start()
                except Exception as err:
                    await send({"type": "lifespan.startup.failed", "message": str(err)})
                    return
                # Everything loaded so far (models, libraries) lives as long as the process: move it out of
                # the garbage collector's sight, so collections scan only what requests allocate.
                gc.collect()
                gc.freeze()
                # A background thread in pure Python (a monitor judging a window, a default recomputed)
                # keeps the interpreter lock up to this long each time the loop asks for it back; 5 ms
                # (the default) a few times over eats a 50 ms deadline.
                sys.setswitchinterval(SWITCH_INTERVAL_S)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.portfolio.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        parts = _segments(scope)
        try:
            status, body, headers = await self._route(method, parts, scope, receive)
        except InvalidRequest as err:
            status, body, headers = 400, _encode({"error": str(err)}), _JSON
        except StoreRejected as err:
            status, body, headers = 400, _encode({"error": f"the store refused the values: {err}"}), _JSON
        except RecursionError:
            status, body, headers = 400, _encode({"error": "malformed request: nested too deep"}), _JSON
        except deploy.PromotionError as err:
            status, body, headers = err.status, _encode({"error": str(err), "failing": err.details}), _JSON
        except AuditError as err:
            status, body, headers = (404 if err.not_found else 400), _encode({"error": str(err)}), _JSON
        except UnknownModel as err:
            status, body, headers = 404, _encode({"error": str(err)}), _JSON
        except TooLarge:
            status, body, headers = 413, _encode({"error": f"request body over {self.max_body} bytes"}), _JSON
        except Unauthorized as err:
            status, body, headers = (
                401,
                _encode({"error": str(err)}),
                [*_JSON, (b"www-authenticate", b"Bearer")],
            )
        except Forbidden as err:
            status, body, headers = 403, _encode({"error": str(err)}), _JSON
        except Unavailable as err:
            status, body, headers = 503, _encode({"error": str(err)}), _JSON
        except ClientGone:
            return
        except MethodNotAllowed:
            status, body, headers = 405, _encode({"error": f"{method} not allowed on {scope['path']}"}), _JSON
        except Exception:  # a bug outside the chain (which has its own guard): say so, keep serving
            log.exception("request %s %s failed", method, scope["path"])
            status, body, headers = 500, _encode({"error": "internal error; see the server log"}), _JSON
        headers = [*headers, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _read(self, scope: Scope, receive: Receive) -> bytes:
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise TooLarge
        chunks = []
        size = 0
        more = True
        while more:
            # A body slower than [server] body_timeout_s is cut off by the connection guard: a disconnect.
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise TooLarge
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def _route(
        self, method: str, parts: list[str], scope: Scope, receive: Receive
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        n = len(parts)
        head = parts[0]
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] == "predict":
            _need(method, "POST")
            return 200, await self._predict_v1(parts[2], await self._read(scope, receive)), _JSON
        if head == "v2":
            if (
                n >= 4
                and parts[1] == "models"
                and parts[-1] == "infer"
                and (n == 4 or (n == 6 and parts[3] == "versions"))
            ):
                _need(method, "POST")
                return await self._infer(parts[2], await self._read(scope, receive), scope)
            _need(method, "GET")
            return 200, self._v2_get(parts), _JSON
        if head == "v1" and n == 2 and parts[1] == "models":
            _need(method, "GET")
            return 200, _encode({"models": self._describe(scope)}), _JSON
        if head == "v1" and n >= 2 and parts[1] == "audits":
            return 200, await self._audits(method, parts[2:], scope, receive), _JSON
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] == "episodes":
            _need(method, "GET")
            self.portfolio.chain(parts[2])
            return (
                200,
                _encode({"episodes": await asyncio.to_thread(self.portfolio.audits.episodes, parts[2])}),
                _JSON,
            )
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] == "health":
            _need(method, "POST")
            actor = self._authorize(scope)
            return 200, await self._set_health(parts[2], await self._read(scope, receive), actor), _JSON
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] == "monitor":
            _need(method, "GET")
            self.portfolio.chain(parts[2])
            report = self.portfolio.monitors.report(parts[2])
            if report is None:
                report = {"model": parts[2], "state": "not monitored",
                          "fix": f"add a [models.{parts[2]}.monitor] table to portfolio.toml"}  # fmt: skip
            return 200, _encode(report), _JSON
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] == "events":
            _need(method, "GET")
            self.portfolio.chain(parts[2])
            events = await asyncio.to_thread(self.portfolio.state_store.state_events, parts[2])
            shown = [{**dataclasses.asdict(e), "at": _iso(e.ts)} for e in events]
            return 200, _encode({"events": shown}), _JSON
        if head == "v1" and n == 2 and parts[1] == "labels":
            _need(method, "POST")
            self._authorize(scope)  # labels steer promotions: only known senders
            sent: Any = decode(await self._read(scope, receive), LabelsRequest)  # type: ignore[arg-type]
            labels: list[Label] = sent if isinstance(sent, list) else sent.labels
            store = self.portfolio.state_store
            try:
                n_saved = await asyncio.to_thread(save_labels, store, labels)
            except StoreUnavailable as err:
                raise Unavailable(f"the labels were not saved: {err}") from None
            return 200, _encode({"received": n_saved}), _JSON
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] in SHADOW_ROUTES:
            return 200, await self._shadow(method, parts[2], parts[3], scope, receive), _JSON
        if head == "v1" and n == 3 and parts[1] == "models":
            _need(method, "GET")
            self.portfolio.chain(parts[2])
            return 200, _encode(next(m for m in self._describe(scope) if m["name"] == parts[2])), _JSON
        if head == "metrics" and n == 1:
            _need(method, "GET")
            return (
                200,
                generate_latest(self.portfolio.metrics.registry),
                [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            )
        if head == "" and n == 1:
            _need(method, "GET")
            return 200, PAGE, [(b"content-type", b"text/html; charset=utf-8")]
        return 404, _encode({"error": f"no route {scope['path']}"}), _JSON

    async def _audits(self, method: str, rest: list[str], scope: Scope, receive: Receive) -> bytes:
        """GET /v1/audits[?status=&model=], /v1/audits/log, /v1/audits/{id};
        POST /v1/audits/{id}/ack and /v1/audits/{id}/resolve {"action": ..., "value", "for_s", "comment"}."""
        audits = self.portfolio.audits
        raw_query = scope.get("query_string", b"").decode("ascii", "replace")
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(raw_query).items()}
        if not rest:
            _need(method, "GET")
            items = await asyncio.to_thread(audits.items, query.get("status"), query.get("model"))
            return _encode({"audits": [i.to_dict() for i in items]})
        if rest == ["log"]:
            _need(method, "GET")
            return _encode({"log": await asyncio.to_thread(audits.log, query.get("model"))})
        if not (rest[0].isascii() and rest[0].isdigit() and len(rest[0]) <= 18):
            raise AuditError(f"no audit item {rest[0]!r}", not_found=True)
        item_id = int(rest[0])
        if len(rest) == 1:
            _need(method, "GET")
            item = await asyncio.to_thread(audits.get, item_id)
            if item is None:
                raise AuditError(f"no audit item {item_id}", not_found=True)
            trail = await asyncio.to_thread(audits.log, None, item_id)
            return _encode({**item.to_dict(), "actions": trail})
        if len(rest) == 2 and rest[1] in {"ack", "resolve"}:
            _need(method, "POST")
            actor = self._authorize(scope)
            body = await self._read(scope, receive)
            req: AuditAction = decode(body or b"{}", AuditAction, _decode_action)
            action = "ack" if rest[1] == "ack" else req.action
            if not action:
                raise InvalidRequest(
                    'resolve needs "action": approve_default, refresh_default, replace_default, '
                    "restore, keep_out or comment"
                )
            try:
                done = await act(self.portfolio, item_id, action, actor, req.comment, req.value, req.for_s)
            except StoreUnavailable as err:
                raise Unavailable(f"the action was not taken: the store cannot record it ({err})") from None
            return _encode(done)
        raise AuditError(f"no route /v1/audits/{'/'.join(rest)}", not_found=True)

    async def _shadow(self, method: str, model: str, what: str, scope: Scope, receive: Receive) -> bytes:
        """GET shadows (the candidates' report), GET history; POST promote {"candidate", "reason", "force"},
        POST rollback {"reason"} (both authenticated; the flip is applied here at once, and by every other
        replica at its next state poll)."""
        p = self.portfolio
        p.chain(model)
        store = p.state_store
        try:
            if what == "shadows":
                _need(method, "GET")
                return _encode(await asyncio.to_thread(deploy.report, store, p.spec, model))
            if what == "history":
                _need(method, "GET")
                return _encode({"history": await asyncio.to_thread(deploy.history, store, model)})
            _need(method, "POST")
            actor = self._authorize(scope)
            body = await self._read(scope, receive)
            req: Flip = decode(body or b"{}", Flip, _decode_flip)
            if what == "promote":
                if not req.candidate:
                    raise InvalidRequest('promote needs "candidate"')
                done = await asyncio.to_thread(
                    deploy.promote, store, p.spec, model, req.candidate, actor, req.reason, req.force
                )
            else:
                done = await asyncio.to_thread(
                    deploy.rollback, store, p.spec, model, actor, req.reason, req.force
                )
        except StoreUnavailable as err:
            raise Unavailable(f"nothing was changed: the store cannot record it ({err})") from None
        if done.get("status") == "flipped":
            p.deploy(model, done["to"])
        return _encode(done)

    def _describe(self, scope: Scope) -> list[dict[str, Any]]:
        """The models as ``Portfolio.describe`` has them; backend URLs (where the models live, for anyone
        probing the network) only for a token holder."""
        models = self.portfolio.describe()
        if self.tokens and self.tokens.owner_of(_header(scope, b"authorization")) is not None:
            return models
        for m in models:
            m["chain"] = [{k: v for k, v in t.items() if k != "url"} for t in m["chain"]]
        return models

    def _authorize(self, scope: Scope) -> str:
        """The token owner's name, or 401 (403 when no token exists at all); checked before any change."""
        if not self.tokens:
            raise Forbidden("the control plane is closed: set FAILSOFT_ADMIN_TOKEN or a tokens file")
        owner = self.tokens.owner_of(_header(scope, b"authorization"))
        if owner is None:
            raise Unauthorized("a valid Authorization: Bearer <token> header is required")
        return owner

    async def _set_health(self, model: str, body: bytes, actor: str) -> bytes:
        self.portfolio.chain(model)
        req: HealthChange = decode(body, HealthChange, _decode_health)
        try:
            state = await self.portfolio.set_health(model, req.health, req.reason, actor)
        except StoreUnavailable as err:
            raise Unavailable(f"the change was not made: the store cannot record it ({err})") from None
        return _encode(dataclasses.asdict(state))

    def _v2_get(self, parts: list[str]) -> bytes:
        n = len(parts)
        if n == 1:
            return _encode({"name": "failsoft", "version": _version(), "extensions": ["failsoft_provenance"]})
        if n == 3 and parts[1] == "health" and parts[2] in {"live", "ready"}:
            return _encode({"live": True} if parts[2] == "live" else {"ready": self.portfolio.started})
        if parts[1] == "models" and n >= 3:
            chain = self.portfolio.chain(parts[2])
            rest = parts[3:]
            if rest and rest[0] == "versions":
                rest = rest[2:]
            if not rest:
                return _encode(oip.model_metadata(chain))
            if rest == ["ready"]:
                return _encode({"name": chain.model, "ready": self.portfolio.started})
        raise UnknownModel("/".join(parts[1:]), list(self.portfolio.chains))

    async def _answer(self, chain: Chain, rows: list[Any], request_id: str | None, single: bool) -> Outcome:
        model = chain.model
        if len(rows) > self.max_batch:
            self.portfolio.metrics.reject(model, "batch_too_large")
            raise InvalidRequest(f"batch of {len(rows)} rows is over the limit of {self.max_batch}")
        if not rows:
            raise InvalidRequest("inputs is an empty list")
        return await chain.run(rows, request_id or self.portfolio.ids.next(), single)

    async def _predict_v1(self, model: str, body: bytes) -> bytes:
        chain = self.portfolio.chain(model)
        req = decode(body, PredictRequest, _decode_predict)
        check_id(req.id)
        single = isinstance(req.inputs, dict)
        rows = [req.inputs] if single else req.inputs
        assert isinstance(rows, list)
        return _encode(await self._answer(chain, rows, req.id, single))

    async def _infer(
        self, model: str, body: bytes, scope: Scope
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        chain = self.portfolio.chain(model)
        header_len = _header(scope, b"inference-header-content-length")
        binary = b""
        if header_len is not None:
            try:
                cut = int(header_len)
            except ValueError:
                raise InvalidRequest("Inference-Header-Content-Length is not a number") from None
            if not 0 <= cut <= len(body):
                raise InvalidRequest(f"Inference-Header-Content-Length {cut} is outside the body")
            body, binary = body[:cut], body[cut:]
        req = decode(body, oip.InferRequest, _decode_infer)
        check_id(req.id)
        try:
            oip.check_size(req, self.max_batch, len(chain.schema.names))
        except InvalidRequest:
            self.portfolio.metrics.reject(model, "batch_too_large")
            raise
        oip.attach_binary(req, binary)
        rows = oip.to_rows(req, chain)
        outcome = await self._answer(chain, rows, req.id, single=False)
        doc = oip.to_response(outcome, len(rows), single=False)
        if not oip.wants_binary(req):
            return 200, _encode(doc), _JSON
        payload, cut = oip.binary_response(doc)
        return (
            200,
            payload,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(cut).encode()),
            ],
        )


def _iso(ts: float) -> str:
    """An epoch as ISO-8601 UTC, beside the number, for a person reading the answer."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")


def _segments(scope: Scope) -> list[str]:
    """The path's segments, each percent-decoded on its own: ``/v1/models/x%2Fpredict`` names the model
    ``x/predict`` rather than routing to predict."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None or b"%" not in raw:
        return scope["path"].strip("/").split("/")  # type: ignore[no-any-return]
    return [urllib.parse.unquote(p) for p in raw.decode("ascii", "replace").strip("/").split("/")]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _need(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise MethodNotAllowed


def _version() -> str:
    from importlib.metadata import version

    return version("failsoft")
