"""A small Open Inference Protocol server standing in for the heavy tier (Triton, KServe...) in the
demo and the tests, with faults on command: ``POST /control {"mode": M}``, M one of ok, slow, hang,
error, garbage. ``POST /json/NAME {"inputs": {...}}`` serves the same models as a plain JSON endpoint.

    python -m failsoft.demo.backend --port 9001 --model churn=models/churn_heavy.joblib
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any

import joblib
import msgspec
import numpy as np

MODES = {"ok", "slow", "hang", "error", "garbage"}


class Backend:
    def __init__(self, models: dict[str, Any], mode: str = "ok", delay_ms: float = 25.0) -> None:
        self.models = models
        self.mode = mode
        self.delay_s = delay_ms / 1000.0
        self.calls = 0
        self._garbage = itertools.cycle(["not json", "nan", "range", "shape", "empty"])

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            msg = await receive()
            body += msg.get("body", b"")
            more = msg.get("more_body", False)
        status, payload = await self.handle(scope["method"], scope["path"].strip("/").split("/"), body)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def handle(self, method: str, parts: list[str], body: bytes) -> tuple[int, bytes]:
        enc = msgspec.json.encode
        if parts == ["control"] and method == "POST":
            doc = msgspec.json.decode(body)
            if doc.get("mode") not in MODES:
                return 400, enc({"error": f"mode must be one of {sorted(MODES)}"})
            self.mode = doc["mode"]
            self.delay_s = float(doc.get("delay_ms", self.delay_s * 1000)) / 1000.0
            return 200, enc({"mode": self.mode, "calls": self.calls})
        if parts[:2] == ["v2", "health"]:
            return 200, enc({"ready": True, "live": True})
        if len(parts) == 4 and parts[:2] == ["v2", "models"] and parts[3] == "infer":
            self.calls += 1
            return await self.infer(parts[2], body)
        if len(parts) == 2 and parts[0] == "json" and method == "POST":
            self.calls += 1
            return await self.plain(parts[1], body)
        return 404, enc({"error": "not found"})

    async def plain(self, name: str, body: bytes) -> tuple[int, bytes]:
        """The plain JSON face: one row's features in, ``{"result": {"score": ...}}`` out."""
        row = msgspec.json.decode(body)["inputs"]
        tensor = {"name": "input", "shape": [1, len(row)], "datatype": "FP64", "data": list(row.values())}
        status, payload = await self.infer(name, msgspec.json.encode({"inputs": [tensor]}))
        if status != 200:
            return status, payload
        try:
            out = msgspec.json.decode(payload)["outputs"][0]
        except msgspec.DecodeError:
            return 200, payload
        value = out["data"] if out["datatype"] == "BYTES" else out["data"][0]
        return 200, msgspec.json.encode({"result": {"score": value}})

    async def infer(self, name: str, body: bytes) -> tuple[int, bytes]:
        enc = msgspec.json.encode
        mode = self.mode
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(self.delay_s)
        if mode == "error":
            return 500, enc({"error": "injected failure"})
        model = self.models.get(name)
        if model is None:
            return 404, enc({"error": f"no model {name}"})
        req = msgspec.json.decode(body)
        tensor = req["inputs"][0]
        x = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        if hasattr(model, "predict_proba"):
            out = model.predict_proba(x)[:, 1]
            dtype, shape, data = "FP64", [len(x)], out.tolist()
        else:
            out = model.predict(x)
            dtype, shape, data = "BYTES", list(out.shape), out.ravel().tolist()
        if mode == "garbage":
            kind = next(self._garbage)
            if kind == "not json":
                return 200, b"<html>502 upstream</html>"
            if kind == "nan":
                data = [float("nan")] * len(data) if dtype == "FP64" else [None] * len(data)
            elif kind == "range":
                data = [7.5] * len(data) if dtype == "FP64" else [] * len(data)
                shape = shape if dtype == "FP64" else [len(x), 0]
            elif kind == "shape":
                shape, data = [len(x) + 1], [*data, data[0]]
            else:
                shape, data = [len(x), 0], []
            return 200, msgspec.json.encode(
                {
                    "model_name": name,
                    "outputs": [{"name": "output", "datatype": dtype, "shape": shape, "data": data}],
                }
            ).replace(b"null", b"NaN")
        return 200, enc(
            {
                "model_name": name,
                "id": req.get("id", ""),
                "outputs": [{"name": "output", "datatype": dtype, "shape": shape, "data": data}],
            }
        )


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", action="append", default=[], help="NAME=PATH of a joblib model")
    p.add_argument("--mode", default="ok", choices=sorted(MODES))
    args = p.parse_args()
    models = {}
    for item in args.model:
        name, _, path = item.partition("=")
        models[name] = joblib.load(path)
    uvicorn.run(
        Backend(models, args.mode),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        # a request hanging on purpose does not hold up a stop: SIGTERM ends it within a second
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
