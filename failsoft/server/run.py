"""Running the app under uvicorn (uvloop when present), behind the connection guard (server/protocol.py)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import resource
import signal
import socket
import threading
import time

import msgspec
import uvicorn

from failsoft import tracing
from failsoft.portfolio import Portfolio
from failsoft.server.app import App
from failsoft.server.auth import Tokens
from failsoft.server.edge import edge_protocol
from failsoft.server.lifecycle import Lifecycle, Server
from failsoft.server.overload import FD_RESERVE, effective_cap
from failsoft.server.protocol import Refusals, guarded_protocol

log = logging.getLogger("failsoft.server")
# Seconds between a worker's looks at whether its supervisor is still there.
ORPHAN_CHECK_S = 1.0


def uvicorn_config(
    portfolio: Portfolio,
    host: str,
    port: int,
    log_level: str = "info",
    tokens: Tokens | None = None,
    unproven_ok: bool = False,
    http: str = "failsoft",
    life: Lifecycle | None = None,
) -> uvicorn.Config:
    """The server for ``portfolio``: ``http`` "failsoft" is failsoft's own HTTP edge (server/edge.py),
    "uvicorn" uvicorn's protocol behind the connection guard (server/protocol.py)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    # no more connections than the descriptors allow, less a reserve (server/overload.py)
    spec = msgspec.structs.replace(
        portfolio.spec.server, max_connections=effective_cap(portfolio.spec.server.max_connections)
    )
    refusals = Refusals()
    portfolio.metrics.gauges.append(refusals.metrics)
    life = life or Lifecycle()
    app = App(portfolio, tokens, unproven_ok, life)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop=loop,
        http=edge_protocol(app.answer, spec, refusals, life)
        if http == "failsoft"
        else guarded_protocol(spec, refusals),
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_keep_alive=spec.keep_alive_s,  # type: ignore[arg-type]
        timeout_graceful_shutdown=2,
    )


def raise_fd_limit(connections: int) -> int:
    """Raise this process's open-file limit to its hard limit (no privilege needed); returns the soft limit.
    A limit that still cannot hold ``connections`` caps them (server/overload.py, which says so)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, connections + FD_RESERVE)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def serve(
    portfolio: Portfolio,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    tokens: Tokens | None = None,
    unproven_ok: bool = False,
    http: str = "failsoft",
    sock: socket.socket | None = None,
    worker: bool = False,
) -> int:
    """Serve until stopped; the exit code (3 when start-up failed: a model that would not load, a tier that
    cannot answer). With ``sock``, serve on that listening socket (bound before the models loaded, or a
    worker's, inherited from its supervisor in server/workers.py) rather than binding ``host:port``."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    raise_fd_limit(portfolio.spec.server.max_connections)
    if worker:
        threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    life = Lifecycle(portfolio.spec.server.drain_s)
    server = Server(uvicorn_config(portfolio, host, port, log_level, tokens, unproven_ok, http, life), life)
    tracing.start()  # when the OTEL_* variables ask for traces (failsoft/tracing.py)
    try:
        server.run(sockets=None if sock is None else [sock])
    finally:
        tracing.stop()
    return 0 if server.started else 3


def _stop_when_orphaned(supervisor: int) -> None:
    """A worker whose supervisor died (kill -9) stops gracefully, as on its SIGTERM, rather than serving on
    unsupervised: nothing would replace it, stop it, or keep its shared log writer."""
    while os.getppid() == supervisor:
        time.sleep(ORPHAN_CHECK_S)
    log.warning(json.dumps({"event": "supervisor_gone", "supervisor": supervisor, "action": "stopping"}))
    os.kill(os.getpid(), signal.SIGTERM)
