"""Baseline (a): a bare ASGI app calling scikit-learn's predict_proba directly, on the same server stack
as failsoft (uvicorn, uvloop, httptools, msgspec). No fallback, no deadline, no checks. With HANG=1 in the
environment the model never answers (a call that blocks, as a stuck model in process does).

    python bench/bare_app.py MODEL.joblib FEATURE,FEATURE,... PORT
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import joblib
import msgspec
import numpy as np
import uvicorn

model = joblib.load(sys.argv[1])
names = sys.argv[2].split(",")
decode = msgspec.json.Decoder().decode
encode = msgspec.json.Encoder().encode
HANG = bool(os.environ.get("HANG"))


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        msg = await receive()
        body += msg.get("body", b"")
        more = msg.get("more_body", False)
    if scope["path"] == "/ready":
        out = b"{}"
    else:
        if HANG:
            time.sleep(3600)
        row = decode(body)["inputs"]
        x = np.array([[row[n] for n in names]], dtype=np.float64)
        out = encode({"outputs": float(model.predict_proba(x)[0, 1])})
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[3]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
        server_header=False,
        date_header=False,
    )
