"""The control plane: models, health, audits, shadows and promotion, labels, metrics and the console page.

One route table; state-changing routes need a bearer token (their owner is recorded as the actor). Errors
become statuses in one place (server/http.py); handlers raise domain errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from prometheus_client import exposition as prometheus_text
from prometheus_client.openmetrics import exposition as openmetrics

from failsoft.audit.actions import ACTIONS, act
from failsoft.audit.actions import MISSING as MISSING_VALUE
from failsoft.errors import InvalidRequest, NoSuchAudit
from failsoft.introspect import ModelInfo, describe, without_urls
from failsoft.labels import Label, LabelsRequest, save_labels
from failsoft.portfolio import Portfolio
from failsoft.server import console
from failsoft.server.auth import Tokens
from failsoft.server.body import decode
from failsoft.server.http import (
    JSON,
    Forbidden,
    Headers,
    MethodNotAllowed,
    NoRoute,
    Request,
    Unauthorized,
    Unavailable,
    conditional,
    encode,
)
from failsoft.shadow import deploy
from failsoft.store import StoreUnavailable
from failsoft.types import Health

__all__ = ["ControlPlane"]

Handler = Callable[["ControlPlane", Request], Awaitable[Any]]


class AuditActionBody(msgspec.Struct):
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


_decode_health = msgspec.json.Decoder(HealthChange).decode
_decode_action = msgspec.json.Decoder(AuditActionBody).decode
_decode_flip = msgspec.json.Decoder(Flip).decode

# (method, path pattern, handler): a ``{name}`` segment matches any one segment and is given to the handler
# as ``request.params[name]``. The first pattern that matches the path decides; a wrong method is a 405.
ROUTES: list[tuple[str, tuple[str, ...], Handler]] = []


def route(method: str, path: str, body: Any = None, auth: bool = False) -> Callable[[Handler], Handler]:
    """``body``: the type the request's body decodes to; ``auth``: a token needed (for server/openapi.py)"""

    def add(handler: Handler) -> Handler:
        ROUTES.append((method, tuple(path.strip("/").split("/")), handler))
        handler.body, handler.auth = body, auth  # type: ignore[attr-defined]
        return handler

    return add


def _match(pattern: tuple[str, ...], parts: list[str]) -> dict[str, str] | None:
    if len(pattern) != len(parts):
        return None
    params = {}
    for want, got in zip(pattern, parts, strict=True):
        if want.startswith("{"):
            params[want[1:-1]] = got
        elif want != got:
            return None
    return params


class ControlPlane:
    def __init__(self, portfolio: Portfolio, tokens: Tokens) -> None:
        self.portfolio = portfolio
        self.tokens = tokens
        self.max_body = portfolio.spec.server.max_body_bytes
        # the console's last ten minutes of answers: every answer is given to it once the portfolio starts
        self.recent = console.Recent(list(portfolio.chains))
        portfolio.subscribe(self.recent.observe)

    async def handle(self, req: Request) -> tuple[int, bytes, Headers]:
        allowed: list[str] = []
        for method, pattern, handler in ROUTES:
            params = _match(pattern, req.parts)
            if params is None:
                continue
            if method != req.method and not (method == "GET" and req.method == "HEAD"):
                allowed.append(method)
                continue
            req.params = params
            answer = await handler(self, req)
            if isinstance(answer, tuple):
                return answer
            return 200, encode(answer), JSON
        raise MethodNotAllowed(*dict.fromkeys(allowed)) if allowed else NoRoute

    # ---- helpers ----------------------------------------------------------------------------------------

    def authorize(self, req: Request) -> str:
        """The token owner's name, or 401 (403 when no token exists at all); checked before any change."""
        if not self.tokens:
            raise Forbidden("the control plane is closed: set FAILSOFT_ADMIN_TOKEN or a tokens file")
        owner = self.tokens.owner_of(req.header(b"authorization"))
        if owner is None:
            raise Unauthorized("a valid Authorization: Bearer <token> header is required")
        return owner

    def model(self, req: Request) -> str:
        """The route's model, known to the portfolio (UnknownModel otherwise)."""
        name = req.params["model"]
        self.portfolio.chain(name)
        return name

    def models(self, req: Request) -> list[ModelInfo]:
        """The models as ``introspect.describe`` has them; backend URLs (where the models live, for anyone
        probing the network) only for a token holder."""
        models = describe(self.portfolio.chains, self.portfolio.metrics)
        if self.tokens and self.tokens.owner_of(req.header(b"authorization")) is not None:
            return models
        return without_urls(models)

    # ---- who is asking -----------------------------------------------------------------------------------

    @route("GET", "/v1/whoami", auth=True)
    async def whoami(self, req: Request) -> Any:
        """The owner of the request's token (401 for a token the gateway does not know): the console and
        the command line check a token here before they act with it."""
        return {"owner": self.authorize(req)}

    # ---- models -----------------------------------------------------------------------------------------

    @route("GET", "/v1/models")
    async def list_models(self, req: Request) -> Any:
        return {"models": self.models(req)}

    @route("GET", "/v1/models/{model}")
    async def show_model(self, req: Request) -> Any:
        name = self.model(req)
        return next(m for m in self.models(req) if m.name == name)

    @route("POST", "/v1/models/{model}/health", body=HealthChange, auth=True)
    async def set_health(self, req: Request) -> Any:
        actor = self.authorize(req)
        model = self.model(req)
        body: HealthChange = decode(await req.body(self.max_body), HealthChange, _decode_health)
        try:
            state = await self.portfolio.health.set_health(model, body.health, body.reason, actor)
        except StoreUnavailable as err:
            raise Unavailable(f"the change was not made: the store cannot record it ({err})") from None
        return dataclasses.asdict(state)

    @route("GET", "/v1/models/{model}/default")
    async def safe_default(self, req: Request) -> Any:
        """The model's safe default as it answers now: its value (or Top-N list), the model's version, the
        default tier, where the value came from and how old it is. A client keeps it as its own last resort
        (the answer it gives when the gateway cannot); its ETag changes with what it answers, and
        ``If-None-Match`` with the same ETag gets a 304."""
        model = self.model(req)
        chain = self.portfolio.chains[model]
        d = chain.default.describe()
        at = d["refreshed_at"]
        doc = {"model": model, "version": chain.version, "tier": d["name"], "value": d["value"],
               "origin": d["origin"], "pinned": d["pinned"], "refreshed_at": at,
               "age_s": round(time.time() - at, 3) if at is not None else None}  # fmt: skip
        return conditional(req, encode([model, chain.version, d["name"], d["value"], d["pinned"]]), doc)

    @route("GET", "/v1/models/{model}/events")
    async def events(self, req: Request) -> Any:
        model = self.model(req)
        events = await asyncio.to_thread(self.portfolio.state_store.state_events, model)
        return {"events": [{**dataclasses.asdict(e), "at": _iso(e.ts)} for e in events]}

    @route("GET", "/v1/models/{model}/episodes")
    async def episodes(self, req: Request) -> Any:
        model = self.model(req)
        return {"episodes": await asyncio.to_thread(self.portfolio.audits.episodes, model)}

    @route("GET", "/v1/models/{model}/monitor")
    async def monitor(self, req: Request) -> Any:
        model = self.model(req)
        report = self.portfolio.monitors.report(model)
        if report is None:
            return {"model": model, "state": "not monitored",
                    "fix": f"add a [models.{model}.monitor] table to portfolio.toml"}  # fmt: skip
        return report

    # ---- shadows and promotion ----------------------------------------------------------------------------

    @route("GET", "/v1/models/{model}/shadows")
    async def shadows(self, req: Request) -> Any:
        model = self.model(req)
        p = self.portfolio
        return await self._stored(asyncio.to_thread(deploy.report, p.state_store, p.spec, model))

    @route("GET", "/v1/models/{model}/history")
    async def history(self, req: Request) -> Any:
        model = self.model(req)
        return {
            "history": await self._stored(
                asyncio.to_thread(deploy.history, self.portfolio.state_store, model)
            )
        }

    @route("POST", "/v1/models/{model}/promote", body=Flip, auth=True)
    async def promote(self, req: Request) -> Any:
        actor = self.authorize(req)
        model = self.model(req)
        body: Flip = decode(await req.body(self.max_body) or b"{}", Flip, _decode_flip)
        if not body.candidate:
            raise InvalidRequest('promote needs "candidate"')
        p = self.portfolio
        call = asyncio.to_thread(
            deploy.promote, p.state_store, p.spec, model, body.candidate, actor, body.reason, body.force
        )
        return self._applied(model, await self._stored(call))

    @route("POST", "/v1/models/{model}/rollback", body=Flip, auth=True)
    async def rollback(self, req: Request) -> Any:
        actor = self.authorize(req)
        model = self.model(req)
        body: Flip = decode(await req.body(self.max_body) or b"{}", Flip, _decode_flip)
        p = self.portfolio
        call = asyncio.to_thread(
            deploy.rollback, p.state_store, p.spec, model, actor, body.reason, body.force
        )
        return self._applied(model, await self._stored(call))

    async def _stored(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except StoreUnavailable as err:
            raise Unavailable(f"nothing was changed: the store cannot record it ({err})") from None

    def _applied(self, model: str, done: dict[str, Any]) -> dict[str, Any]:
        """A flip is applied here at once, and by every other replica at its next state poll."""
        if done.get("status") == "flipped":
            self.portfolio.health.deploy(model, done["to"])
        return done

    # ---- audits -------------------------------------------------------------------------------------------

    @route("GET", "/v1/audits")
    async def audits(self, req: Request) -> Any:
        q = req.query()
        items = await asyncio.to_thread(self.portfolio.audits.items, q.get("status"), q.get("model"))
        return {"audits": items}

    @route("GET", "/v1/audits/log")
    async def audit_log(self, req: Request) -> Any:
        return {"log": await asyncio.to_thread(self.portfolio.audits.log, req.query().get("model"))}

    @route("GET", "/v1/audits/{id}")
    async def audit(self, req: Request) -> Any:
        item_id = _audit_id(req)
        audits = self.portfolio.audits
        item = await asyncio.to_thread(audits.get, item_id)
        if item is None:
            raise NoSuchAudit(f"no audit item {item_id}")
        trail = await asyncio.to_thread(audits.log, None, item_id)
        return {**item.to_dict(), "actions": trail}

    @route("POST", "/v1/audits/{id}/ack", body=AuditActionBody, auth=True)
    async def ack(self, req: Request) -> Any:
        return await self._act(req, "ack")

    @route("POST", "/v1/audits/{id}/resolve", body=AuditActionBody, auth=True)
    async def resolve(self, req: Request) -> Any:
        return await self._act(req, "")

    async def _act(self, req: Request, action: str) -> Any:
        """POST /v1/audits/{id}/ack, /v1/audits/{id}/resolve {"action", "value", "for_s", "comment"}."""
        item_id = _audit_id(req)
        actor = self.authorize(req)
        body: AuditActionBody = decode(
            await req.body(self.max_body) or b"{}", AuditActionBody, _decode_action
        )
        action = action or body.action
        if not action:
            raise InvalidRequest(f'resolve needs "action": one of {", ".join(ACTIONS[1:])}')
        p = self.portfolio
        try:
            return await act(
                p.audits, p.health, p.spec, item_id, action, actor, body.comment, body.value, body.for_s
            )
        except StoreUnavailable as err:
            raise Unavailable(f"the action was not taken: the store cannot record it ({err})") from None

    # ---- labels, metrics, the console ---------------------------------------------------------------------

    @route("POST", "/v1/labels", body=LabelsRequest, auth=True)
    async def labels(self, req: Request) -> Any:
        self.authorize(req)  # labels steer promotions: only known senders
        sent: Any = decode(await req.body(self.max_body), LabelsRequest)  # type: ignore[arg-type]
        labels: list[Label] = sent if isinstance(sent, list) else sent.labels
        try:
            n_saved = await asyncio.to_thread(save_labels, self.portfolio.state_store, labels)
        except StoreUnavailable as err:
            raise Unavailable(f"the labels were not saved: {err}") from None
        return {"received": n_saved}

    @route("GET", "/metrics")
    async def metrics(self, req: Request) -> Any:
        """Prometheus' text format; OpenMetrics (exemplars while traces are on) to a scraper asking for it"""
        om = openmetrics if b"openmetrics" in (req.header(b"accept") or b"") else prometheus_text
        # in a thread: at a thousand models it takes a while, and the loop answers meanwhile
        text = await asyncio.to_thread(om.generate_latest, self.portfolio.metrics.registry)
        return 200, text, [(b"content-type", om.CONTENT_TYPE_LATEST.encode())]


def _audit_id(req: Request) -> int:
    raw = req.params["id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise NoSuchAudit(f"no audit item {raw!r}")
    return int(raw)


def _iso(ts: float) -> str:
    """An epoch as ISO-8601 UTC, beside the number, for a person reading the answer."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="milliseconds")
