"""Reloading portfolio.toml while serving, from outside: ``POST /v1/reload`` (a token needed; what
``failsoft reload`` calls) and SIGHUP. Both read the gateway's own file again and apply it (see
failsoft/reload.py): a file that is wrong changes nothing, and the answer (or the log line, for SIGHUP)
says why."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from typing import Any

import msgspec

from failsoft.errors import ConfigError
from failsoft.portfolio import Portfolio
from failsoft.server.api import ControlPlane, route
from failsoft.server.http import Request

__all__ = ["on_sighup"]

log = logging.getLogger("failsoft.server")


@route("POST", "/v1/reload", auth=True)
async def reload(self: ControlPlane, req: Request) -> Any:
    """Read portfolio.toml again and apply it while serving: the models added, removed and replaced (a
    file that is wrong changes nothing: 422 with the key and the fix)."""
    actor = self.authorize(req)
    return msgspec.to_builtins(await self.portfolio.reload(actor=actor))


def on_sighup(portfolio: Portfolio) -> None:
    """SIGHUP reloads the portfolio (one at a time; a signal during a reload waits for it)."""
    loop = asyncio.get_running_loop()

    async def reload_now() -> None:
        try:
            await portfolio.reload(actor="SIGHUP")  # said in the log where it is recorded
        except ConfigError as err:
            log.error(json.dumps({"event": "reload_refused", "error": str(err), "changed": "nothing"}))
        except Exception:  # a reload's bug must not end the server
            log.exception("reload failed; nothing was changed")

    pending: set[asyncio.Task[None]] = set()  # kept until done (the loop holds tasks weakly)

    def hup() -> None:
        task = loop.create_task(reload_now(), name="failsoft-reload")
        pending.add(task)
        task.add_done_callback(pending.discard)

    # not the main thread (a test's server), or no signals on this platform: no SIGHUP then
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, hup)
