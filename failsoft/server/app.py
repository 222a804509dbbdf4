"""The ASGI application: routing, body limits, and the one place errors become HTTP statuses.

Raw ASGI over msgspec rather than a framework: the request path is a handful of routes, and each
microsecond here is paid on every prediction (see bench/overhead.py).
"""

from __future__ import annotations

import gc
import gzip
import json
import logging
import sys
from typing import Any

import msgspec

from failsoft import tracing
from failsoft.chain import Chain
from failsoft.errors import InvalidRequest, UnknownModel
from failsoft.portfolio import Portfolio
from failsoft.probe import prove
from failsoft.server import console_api as _console_api  # noqa: F401 (registers the console's routes)
from failsoft.server import oip, reloads
from failsoft.server import openapi as _openapi  # noqa: F401 (registers GET /openapi.json)
from failsoft.server.api import ControlPlane
from failsoft.server.auth import Tokens
from failsoft.server.body import PredictRequest, check_id, decode
from failsoft.server.http import (
    JSON,
    ClientGone,
    NotOffered,
    Receive,
    Request,
    Response,
    Scope,
    Send,
    encode,
    error_response,
    need,
)
from failsoft.server.lifecycle import Lifecycle
from failsoft.types import Outcome

log = logging.getLogger("failsoft.server")
# Seconds a thread may hold the interpreter lock while the event loop waits for it (Python: 0.005).
SWITCH_INTERVAL_S = 0.001
# Answers at least this long are gzipped for a client that accepts it (below, it saves next to nothing).
GZIP_MIN_BYTES = 1000
# Triton's per-model extension routes (/v2/models/{m}/config, /stats): not offered
TRITON = {"config", "stats"}


_decode_predict = msgspec.json.Decoder(PredictRequest).decode
_decode_infer = msgspec.json.Decoder(oip.InferRequest).decode


class App:
    def __init__(
        self,
        portfolio: Portfolio,
        tokens: Tokens | None = None,
        unproven_ok: bool = False,
        life: Lifecycle | None = None,
    ) -> None:
        self.portfolio = portfolio
        # draining (server/lifecycle.py): not ready, and every answer says Connection: close
        self.life = life or Lifecycle()
        # start even when a tier cannot answer a sample row (otherwise start-up fails, naming it)
        self.unproven_ok = unproven_ok
        self.max_body = portfolio.spec.server.max_body_bytes
        self.max_batch = portfolio.spec.server.max_batch
        # State-changing endpoints need ``Authorization: Bearer <token>``; with no token they are closed.
        self.control = ControlPlane(portfolio, tokens or Tokens({}))

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
                refused = await self._prove()
                if refused:
                    await self.portfolio.close()
                    await send({"type": "lifespan.startup.failed", "message": refused})
                    return
                # Everything loaded so far (models, libraries) lives as long as the process: move it out of
                # the garbage collector's sight, so collections scan only what requests allocate.
                gc.collect()
                gc.freeze()
                # A background thread in pure Python (a monitor judging a window, a default recomputed)
                # keeps the interpreter lock up to this long each time the loop asks for it back; 5 ms
                # (the default) a few times over eats a 50 ms deadline.
                sys.setswitchinterval(SWITCH_INTERVAL_S)
                reloads.on_sighup(self.portfolio)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.portfolio.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _prove(self) -> str:
        """Call every tier once with a sample row (see probe.py); what refuses the start, or ''."""
        findings = await prove(self.portfolio.chains)
        for f in findings:
            level = logging.ERROR if f.severity == "error" else logging.WARNING
            log.log(level, json.dumps({"event": "tier_unproven", **msgspec.to_builtins(f)}))
        errors = [str(f) for f in findings if f.severity == "error"]
        if not errors or self.unproven_ok:
            return ""
        return (
            f"{len(errors)} tier(s) cannot answer a sample row: "
            + " | ".join(errors)
            + ". Correct the portfolio (failsoft check --load shows the same), or start with --allow-unproven"
        )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = await self.answer(Request.of_scope(scope, receive))
        if answer is None:
            return
        status, body, headers = answer
        if status != 304:  # a 304 has no content, and no Content-Length (it would have to be the 200's)
            headers = [*headers, (b"content-length", b"%d" % len(body))]
        if self.life.draining:  # uvicorn's protocol closes the connection after this answer
            headers = [*headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def answer(self, req: Request) -> Response | None:
        """The answer to one request (its body compressed when it is long and the client accepts gzip);
        None when the client went away before its body arrived. Both HTTP surfaces call this: the ASGI
        application above and failsoft's own edge (server/edge.py)."""
        try:
            status, body, headers = await self._route(req)
        except ClientGone:
            return None
        except Exception as err:  # a bug outside the chain (which has its own guard) is a logged 500
            status, body, headers = error_response(err, req.method, req.path, self.max_body)
        if len(body) >= GZIP_MIN_BYTES and b"gzip" in (req.header(b"accept-encoding") or b""):
            body = gzip.compress(body, compresslevel=1)
            headers = [*headers, (b"content-encoding", b"gzip"), (b"vary", b"accept-encoding")]
        return status, body, headers

    async def _route(self, req: Request) -> Response:
        """The data plane first (predict, infer, the OIP reads), then the control plane's route table."""
        parts, method = req.parts, req.method
        n = len(parts)
        head = parts[0]
        if head == "v1" and n == 4 and parts[1] == "models" and parts[3] == "predict":
            need(method, "POST")
            return 200, await self._predict_v1(parts[2], await req.body(self.max_body), req), JSON
        if head == "v2":
            if _not_offered(parts):
                raise NotOffered(
                    f"{req.path}: failsoft does not offer Triton's model repository, "
                    "configuration or statistics extensions; GET /v2/models lists the models, "
                    "GET /v2/models/{name} describes one"
                )
            if (
                n >= 4
                and parts[1] == "models"
                and parts[-1] == "infer"
                and (n == 4 or (n == 6 and parts[3] == "versions"))
            ):
                need(method, "POST")
                return await self._infer(parts[2], await req.body(self.max_body), req)
            need(method, "GET")
            ready = n == 3 and parts[1] == "health" and parts[2] == "ready"
            if ready and (self.life.draining or not self.portfolio.started):
                doc = {"ready": False, "draining": self.life.draining}  # a load balancer takes it out
                return 503, encode(doc), JSON
            return 200, self._v2_get(parts), JSON
        return await self.control.handle(req)

    def _v2_get(self, parts: list[str]) -> bytes:
        n = len(parts)
        if n == 1:
            return encode({"name": "failsoft", "version": _version(), "extensions": ["failsoft_provenance"]})
        if n == 3 and parts[1] == "health" and parts[2] in {"live", "ready"}:
            return encode({"live": True} if parts[2] == "live" else {"ready": self.portfolio.started})
        if n == 2 and parts[1] == "models":  # the models served (as KServe lists them)
            return encode({"models": list(self.portfolio.chains)})
        if parts[1] == "models" and n >= 3:
            chain = self.portfolio.chain(parts[2])
            rest = parts[3:]
            if rest and rest[0] == "versions":
                rest = rest[2:]
            if not rest:
                return encode(oip.model_metadata(chain))
            if rest == ["ready"]:
                return encode({"name": chain.model, "ready": self.portfolio.started})
        raise UnknownModel("/".join(parts[1:]), list(self.portfolio.chains))

    async def _answer(
        self, chain: Chain, rows: list[Any], request_id: str | None, single: bool, http: Request
    ) -> Outcome:
        model = chain.model
        if len(rows) > self.max_batch:
            self.portfolio.metrics.reject(model, "batch_too_large")
            raise InvalidRequest(f"batch of {len(rows)} rows is over the limit of {self.max_batch}")
        if not rows:
            raise InvalidRequest("inputs is an empty list")
        request_id = request_id or self.portfolio.ids.next()
        if tracing.TRACER is None or not tracing.traced(http.headers):  # not traced: nothing more
            return await chain.run(rows, request_id, single)
        route = "/v1/models/{model}/predict" if http.parts[0] == "v1" else "/v2/models/{model}/infer"
        return await tracing.serve(
            f"POST {route}", model, http.headers, lambda: chain.run(rows, request_id, single)
        )

    async def _predict_v1(self, model: str, body: bytes, http: Request) -> bytes:
        """``id`` in the body, else the ``X-Request-Id`` header, else one of the gateway's own."""
        chain = self.portfolio.chain(model)
        req = decode(body, PredictRequest, _decode_predict)
        request_id = req.id
        if request_id is None and (header_id := http.header(b"x-request-id")) is not None:
            request_id = header_id.decode("latin-1")
        check_id(request_id)
        single = isinstance(req.inputs, dict)
        rows = [req.inputs] if single else req.inputs
        assert isinstance(rows, list)
        return encode(await self._answer(chain, rows, request_id, single, http))

    async def _infer(self, model: str, body: bytes, http: Request) -> Response:
        chain = self.portfolio.chain(model)
        header_len = http.header(b"inference-header-content-length")
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
        oip.check_outputs(req)
        try:
            oip.check_size(req, self.max_batch, len(chain.schema.names))
        except InvalidRequest:
            self.portfolio.metrics.reject(model, "batch_too_large")
            raise
        oip.attach_binary(req, binary)
        rows = oip.to_rows(req, chain)
        outcome = await self._answer(chain, rows, req.id, False, http)
        doc = oip.to_response(outcome, len(rows), single=False)
        if not oip.wants_binary(req):
            return 200, encode(doc), JSON
        payload, cut = oip.binary_response(doc)
        return (
            200,
            payload,
            [
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", str(cut).encode()),
            ],
        )


def _not_offered(parts: list[str]) -> bool:
    """Triton's extension routes: /v2/repository/..., /v2/models/{m}[/versions/{v}]/config and /stats."""
    n = len(parts)
    return (n >= 2 and parts[1] == "repository") or (n >= 4 and parts[1] == "models" and parts[-1] in TRITON)


def _version() -> str:
    from importlib.metadata import version

    return version("failsoft")
