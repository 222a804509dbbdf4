"""The console's routes: its page and assets, and the documents it draws (the portfolio, one model). The
documents are made in a thread: they grow with the models, and the event loop answers meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import msgspec

from failsoft.introspect import describe, without_urls
from failsoft.server import console
from failsoft.server.api import ControlPlane, route
from failsoft.server.http import JSON, NoRoute, Request, encode
from failsoft.shadow import deploy

__all__ = ["console_doc", "console_model"]


@route("GET", "/")
async def page(self: ControlPlane, req: Request) -> Any:
    return 200, console.page(), [(b"content-type", b"text/html; charset=utf-8")]


@route("GET", "/static/{name}")
async def static(self: ControlPlane, req: Request) -> Any:
    kind = console.ASSETS.get(req.params["name"])
    if kind is None:
        raise NoRoute
    return 200, console.asset(req.params["name"]), [(b"content-type", kind)]


def _shadow_report(self: ControlPlane, model: str) -> Any:
    """The shadow report of a model with candidates, as builtins; None for one without (blocking: the
    store's)."""
    p = self.portfolio
    if len(p.chains[model].eligible) < 2:
        return None
    return msgspec.to_builtins(deploy.report(p.state_store, p.spec, model))


@route("GET", "/v1/console/models/{model}")
async def console_model(self: ControlPlane, req: Request) -> Any:
    """What a model's page draws, in one document."""
    model = self.model(req)
    p = self.portfolio
    chains = {model: p.chains[model]}
    info = msgspec.to_builtins(without_urls(describe(chains, p.metrics)))[0]

    def stored() -> tuple[Any, Any, Any]:
        events = [dataclasses.asdict(e) for e in p.state_store.state_events(model, limit=30)]
        flips = msgspec.to_builtins(deploy.history(p.state_store, model, limit=30))
        return events, flips, _shadow_report(self, model)

    events, flips, shadow = await self._stored(asyncio.to_thread(stored))
    report = p.monitors.report(model)
    monitor = msgspec.to_builtins(report) if report is not None else None
    reason = p.chains[model].health_reason
    return console.model_page(self.recent, info, reason, monitor, events, flips, shadow)


@route("GET", "/v1/console")
async def console_doc(self: ControlPlane, req: Request) -> Any:
    """Everything the console page draws, in one document (one poll a few seconds apart)."""
    p = self.portfolio

    def stored() -> tuple[Any, Any, Any]:
        states = p.state_store.load_states()
        audits = [a.to_dict() for a in p.audits.items(None, None) if a.status != "resolved"]
        shadows = {m: _shadow_report(self, m) for m in list(p.chains)}
        return states, audits, {m: r for m, r in shadows.items() if r is not None}

    states, audits, shadows = await self._stored(asyncio.to_thread(stored))

    def made() -> bytes:  # in a thread, as /metrics: proportional to the models, never on the loop
        models = msgspec.to_builtins(without_urls(describe(p.chains, p.metrics)))
        defaults = {name: chain.default.describe() for name, chain in list(p.chains.items())}
        return encode(console.console(self.recent, models, states, audits, shadows, defaults))

    return 200, await asyncio.to_thread(made), JSON
