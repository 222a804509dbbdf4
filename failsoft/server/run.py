"""Running the app under uvicorn (uvloop and httptools when present)."""

from __future__ import annotations

import importlib.util
import logging

import uvicorn

from failsoft.portfolio import Portfolio
from failsoft.server.app import App
from failsoft.server.auth import Tokens


def uvicorn_config(
    portfolio: Portfolio, host: str, port: int, log_level: str = "info", tokens: Tokens | None = None
) -> uvicorn.Config:
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return uvicorn.Config(
        App(portfolio, tokens),
        host=host,
        port=port,
        loop=loop,
        http=http,
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=2,
    )


def serve(
    portfolio: Portfolio,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    tokens: Tokens | None = None,
) -> None:
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    server = uvicorn.Server(uvicorn_config(portfolio, host, port, log_level, tokens))
    server.run()
