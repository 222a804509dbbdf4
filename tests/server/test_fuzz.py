"""A seeded fuzzer over every endpoint, both OIP body encodings and the control plane: never a 5xx, never a
hang, the JSON error shape on every 4xx, and, after a clean stop, one log row for every answer given.

The app runs with a real portfolio (a compiled model, a hanging-free python tier, the SQLite log and its
writer process). CI runs a small budget; ``FAILSOFT_FUZZ_EXAMPLES=5000 pytest tests/server/test_fuzz.py``
(or ``python bench/fuzz.py``) runs longer.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from failsoft import Portfolio
from failsoft.server.app import App
from failsoft.server.auth import Tokens
from failsoft.store import open_store
from tests.portfolios import default_tier, model, python_tier, write

EXAMPLES = int(os.environ.get("FAILSOFT_FUZZ_EXAMPLES", "300"))
TOKEN = "fuzz-token-0123456789abcdef"
FEATURES = ["a", "b", "c"]


def portfolio(folder: Path) -> Path:
    """``m``: a float, a bounded int and an optional string; an in-process model watched by a monitor."""
    inputs = (
        "a",
        {"name": "b", "type": "int", "min": -100, "max": 100},
        {"name": "c", "type": "string", "required": False, "default": "x"},
    )
    m = model(
        python_tier("py", "tests.helpers:score4"),
        default_tier(0.5),
        inputs=inputs,
        output={"type": "float", "min": 0, "max": 1},
        deadline_ms=200,
        monitor={"learn_rows": 40, "window_rows": 40, "action": "warn"},
    )
    server = {"max_body_bytes": 65536, "max_batch": 64}
    return write(folder, {"m": m}, server=server)


class Loop:
    """A portfolio and its app on an event loop in a thread of their own (hypothesis drives tests
    synchronously)."""

    def __init__(self, toml: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.portfolio = Portfolio.from_toml(toml)
        self.run(self.portfolio.start())
        self.app = App(self.portfolio, Tokens({TOKEN.encode(): "fuzzer"}))
        self.answers = 0  # data-plane 200s: each is one logged record

    def run(self, coro: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.run(self.portfolio.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    folder = tmp_path_factory.mktemp("fuzz")
    loop = Loop(portfolio(folder))
    yield loop
    loop.close()
    store = open_store(f"sqlite:///{folder / 'state' / 'failsoft.db'}")
    try:
        assert store.count_predictions() == loop.answers, "one log row for every answer given"
    finally:
        store.close()


async def call(app: App, method: str, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    sent: list[dict[str, Any]] = []
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]] if len(body) > 10 else [body]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    from urllib.parse import unquote

    raw_path, _, query = path.partition(b"?")
    scope = {"type": "http", "method": method, "path": unquote(raw_path.decode("latin-1")),
             "raw_path": raw_path, "query_string": query, "headers": headers}  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 10)  # never a hang
    return sent


# ---- what a client might send ---------------------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["\ud800", "\x00", "a\udfffb", "NaN", "1e999", ""]),
)  # fmt: skip
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=5), inner, max_size=4), max_leaves=12)  # fmt: skip
rows = st.fixed_dictionaries({}, optional={f: values for f in FEATURES}) | values
ids = st.one_of(st.none(), st.text(max_size=30), st.sampled_from(["\ud800", "\x00", "x" * 300]), values)


def encode(doc: Any) -> bytes:
    """JSON as a client might write it: Python's json (NaN, Infinity, lone surrogates escaped) with the
    occasional truncation or deep nesting."""
    try:
        return json.dumps(doc, allow_nan=True).encode()
    except (ValueError, RecursionError):
        return b"{"


predict_bodies = st.one_of(
    st.builds(lambda r, i: encode({"inputs": r, "id": i}), rows, ids),
    st.builds(lambda rs, i: encode({"inputs": rs, "id": i}), st.lists(rows, max_size=80), ids),
    st.builds(encode, values),
    st.binary(max_size=200),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"inputs": ' + b"[" * n + b"]" * n + b"}"),
)


def tensor(draw: Any) -> dict[str, Any]:
    rows_n = draw(st.integers(-1, 70))
    shape = draw(st.sampled_from([[rows_n], [rows_n, 1], [rows_n, 3], [rows_n, 2], [], [rows_n, 3, 1]]))
    datatype = draw(st.sampled_from(["FP64", "FP32", "INT64", "INT8", "BOOL", "BYTES", "NOPE"]))
    name = draw(st.sampled_from([*FEATURES, "input", "zzz"]))
    data = draw(st.one_of(st.lists(values, max_size=80), values))
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


@st.composite
def infer_requests(draw: Any) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    tensors = draw(st.lists(st.composite(lambda d: tensor(d))(), max_size=4))
    doc: dict[str, Any] = {"inputs": tensors, "id": draw(ids)}
    if draw(st.booleans()):
        doc["outputs"] = [{"name": "output", "parameters": {"binary_data": draw(st.booleans())}}]
    if not draw(st.booleans()):
        return encode(doc), []
    # the binary tensor extension: raw bytes after the JSON header
    raw = b""
    for t in tensors:
        n = draw(st.integers(0, 300))
        blob = draw(st.binary(min_size=n, max_size=n)) if draw(st.booleans()) else struct.pack(
            f"<{n // 8}d", *([1.0] * (n // 8)))  # fmt: skip
        t.pop("data", None)
        t["parameters"] = {"binary_data_size": draw(st.sampled_from([len(blob), len(blob) + 1, -1, "x"]))}
        raw += blob
    header = encode(doc)
    cut = draw(st.sampled_from([len(header), len(header) + 1, -1, 0]))
    return header + raw, [(b"inference-header-content-length", str(cut).encode())]


control_bodies = st.one_of(
    st.builds(encode, values),
    st.builds(lambda h, r: encode({"health": h, "reason": r}),
              st.sampled_from(["live", "warning", "quarantined", "audit", "nope", None]), values),
    st.builds(lambda a, c, v: encode({"action": a, "comment": c, "value": v, "for_s": v}),
              st.sampled_from(["ack", "comment", "keep_out", "restore", "approve_default", "x"]), values,
              values),
    st.builds(lambda i, lab: encode([{"id": i, "label": lab}]), ids, values),
    st.builds(lambda c, f: encode({"candidate": c, "force": f, "reason": "r"}), values, values),
    st.binary(max_size=100),
)  # fmt: skip
segments = st.one_of(
    st.sampled_from(["m", "nope", "%2F", "x%2Fpredict", "%C2%B2", "99999999999999999999999", "1", "-1", ""]),
    st.text(alphabet="abc%/.2F", max_size=8),
)
auth = st.sampled_from(
    [[], [(b"authorization", f"Bearer {TOKEN}".encode())], [(b"authorization", b"Bearer x")]]
)


@st.composite
def requests(draw: Any) -> tuple[str, bytes, list[tuple[bytes, bytes]], bytes]:
    kind = draw(st.sampled_from(["predict", "infer", "get", "control"]))
    seg = draw(segments)
    headers = list(draw(auth))
    if kind == "predict":
        model = draw(st.sampled_from(["m", "m", "m", seg]))
        return "POST", f"/v1/models/{model}/predict".encode(), headers, draw(predict_bodies)
    if kind == "infer":
        model = draw(st.sampled_from(["m", "m", seg]))
        version = draw(st.sampled_from(["", "/versions/1", f"/versions/{seg}"]))
        body, extra = draw(infer_requests())
        return "POST", f"/v2/models/{model}{version}/infer".encode(), headers + extra, body
    if kind == "get":
        path = draw(st.sampled_from([
            "/", "/metrics", "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{s}",
            "/v2/models/m/ready", "/v1/models", "/v1/models/{s}", "/v1/models/m/monitor",
            "/v1/models/{s}/events", "/v1/models/m/episodes",
            "/v1/audits", "/v1/audits/{s}", "/v1/audits/log?model={s}", "/v1/audits?status={s}",
            "/v1/models/m/shadows", "/v1/models/m/history", "/{s}",
        ])).format(s=seg)  # fmt: skip
        return draw(st.sampled_from(["GET", "HEAD", "DELETE"])), path.encode(), headers, b""
    path = draw(st.sampled_from([
        "/v1/models/{s}/health", "/v1/models/m/health", "/v1/labels", "/v1/audits/{s}/ack",
        "/v1/audits/1/resolve", "/v1/models/m/promote", "/v1/models/m/rollback",
    ])).format(s=seg)  # fmt: skip
    return draw(st.sampled_from(["POST", "POST", "PUT"])), path.encode(), headers, draw(control_bodies)


@seed(20261202)
@settings(max_examples=EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(req=requests())
def test_no_request_gets_a_5xx_or_hangs_and_every_4xx_is_json(
    served: Loop, req: tuple[str, bytes, list[tuple[bytes, bytes]], bytes]
) -> None:
    method, path, headers, body = req
    sent = served.run(call(served.app, method, path, headers, body))
    start, payload = sent[0], sent[1]["body"]
    status = start["status"]
    assert status < 500, (status, payload[:300], req)
    content_type = dict(start["headers"]).get(b"content-type", b"")
    if status >= 400:
        assert content_type == b"application/json", req
        doc = json.loads(payload)
        assert isinstance(doc["error"], str) and doc["error"], req
    elif status == 200 and method == "POST" and path.split(b"/")[-1] in {b"predict", b"infer"}:
        served.answers += 1
        if content_type == b"application/json":
            doc = json.loads(payload)
            assert "failsoft_tier" in doc.get("parameters", {}) or "tier" in doc
    if status == 200 and content_type == b"application/json" and payload:
        json.loads(payload)  # every JSON answer is valid JSON
