"""The OpenAPI 3.1 document of failsoft's HTTP API (``GET /openapi.json``), made from what the server
itself uses: the control plane's route table (server/api.py: each route's method, path, handler docstring,
body type and whether it needs a token), the data plane's routes (below, beside the types server/app.py
decodes and answers with) and msgspec's JSON Schemas of those types. A route or a type that changes changes
the document; tests/server/test_openapi.py checks every route of the table is in it."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from failsoft.server import oip
from failsoft.server.api import ROUTES, ControlPlane, route
from failsoft.server.body import PredictRequest
from failsoft.server.http import JSON, Request
from failsoft.types import Outcome

__all__ = ["document"]


class Error(msgspec.Struct):
    """Every error answer: what went wrong and how to put it right, in words."""

    error: str


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    operation: str
    summary: str
    body: Any = None
    answer: Any = None
    tag: str = "data plane"
    auth: bool = False


# The data plane is dispatched by hand for speed (server/app.py): its routes are listed here.
DATA_PLANE = (
    Op("POST", "/v1/models/{model}/predict", "predict",
       "One row's answer (inputs: an object) or a batch's (inputs: a list), with its provenance: the tier "
       "that answered, whether it is degraded and why, every tier passed by",
       PredictRequest, Outcome),
    Op("POST", "/v2/models/{model}/infer", "infer",
       "The Open Inference Protocol's inference (tensors by input name, or one matrix); provenance in "
       "parameters (failsoft_tier, failsoft_degraded, failsoft_reason)", oip.InferRequest, None, "oip"),
    Op("POST", "/v2/models/{model}/versions/{version}/infer", "infer_version",
       "The same, with a version in the path (any version: failsoft serves one per model)",
       oip.InferRequest, None, "oip"),
    Op("GET", "/v2", "server_metadata", "The server's name, version and extensions", tag="oip"),
    Op("GET", "/v2/health/live", "live", "200 while the process runs", tag="oip"),
    Op("GET", "/v2/health/ready", "ready",
       "200 once every model is loaded; 503 before, and on SIGTERM while the replica drains", tag="oip"),
    Op("GET", "/v2/models", "oip_models", "The models served", tag="oip"),
    Op("GET", "/v2/models/{model}", "model_metadata", "A model's inputs and output as tensors", tag="oip"),
    Op("GET", "/v2/models/{model}/ready", "model_ready", "Whether the model is ready", tag="oip"),
)  # fmt: skip


def _control_plane() -> list[Op]:
    ops = []
    for method, pattern, handler in ROUTES:
        path = "/" + "/".join(pattern)
        doc = (handler.__doc__ or "").strip()
        summary = re.sub(r"\s+", " ", doc.split("\n\n")[0]) if doc else handler.__name__.replace("_", " ")
        tag = "console" if "console" in path or path in {"/", "/static/{name}"} else "control plane"
        body, auth = getattr(handler, "body", None), getattr(handler, "auth", False)
        ops.append(Op(method, path, handler.__name__, summary, body, None, tag, auth))
    return ops


@functools.cache
def document(version: str = "") -> dict[str, Any]:
    """The document (made once per process)."""
    control = _control_plane()
    ops = [*DATA_PLANE, *control]
    types = [t for op in ops for t in (op.body, op.answer) if t is not None] + [Error]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry: dict[str, Any] = {"operationId": op.operation, "summary": op.summary[:300], "tags": [op.tag]}
        params = re.findall(r"{(\w+)}", op.path)
        if params:
            entry["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                   for p in params]  # fmt: skip
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[op.body]}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if op.answer is not None:
            ok["content"] = {"application/json": {"schema": by_type[op.answer]}}
        elif op.path not in {"/", "/static/{name}", "/metrics"}:
            ok["content"] = {"application/json": {"schema": {"type": "object"}}}
        error = {"description": "an error, in the JSON error shape",
                 "content": {"application/json": {"schema": by_type[Error]}}}  # fmt: skip
        entry["responses"] = {"200": ok, "4XX": error, "5XX": error}
        if op.auth:
            entry["security"] = [{"bearer": []}]
            entry["responses"]["401"] = {**error, "description": "no valid bearer token"}
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "failsoft", "version": version or "0",
                 "description": "Every prediction answered within its deadline, saying which tier gave it "
                 "and why. The data plane needs no token; the control plane's changes need a bearer token."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "tags": [{"name": "data plane"}, {"name": "oip"}, {"name": "control plane"}, {"name": "console"}],
    }  # fmt: skip
    result: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(doc))  # JSON's values only (no tuples)
    _any_items(result)
    return result


def _any_items(node: Any) -> None:
    """``list[Any]`` is ``{"type": "array"}`` in msgspec's schema; generators want its items said:
    ``"items": {}`` (anything)."""
    if isinstance(node, dict):
        if node.get("type") == "array" and "items" not in node and "prefixItems" not in node:
            node["items"] = {}
        for value in node.values():
            _any_items(value)
    elif isinstance(node, list):
        for value in node:
            _any_items(value)


@route("GET", "/openapi.json")
async def openapi(self: ControlPlane, req: Request) -> Any:
    """This document: the HTTP API's OpenAPI 3.1 description."""
    from importlib.metadata import version

    return 200, msgspec.json.encode(document(version("failsoft"))), JSON
