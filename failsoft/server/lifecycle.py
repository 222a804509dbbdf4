"""A serving process's life, owned in one place.

starting (models loading; uvicorn serves nothing yet) -> serving -> draining (SIGTERM, with ``[server]
drain_s`` > 0: ``/v2/health/ready`` answers 503 at once, so a load balancer takes the replica out, while
answers go on, each saying ``Connection: close`` so its client comes back through the balancer) ->
stopping (uvicorn's graceful stop: no new connections, what is in flight finished, the prediction log
flushed) -> exit 0.

A second SIGTERM or a Ctrl-C ends the drain at once; a second Ctrl-C forces the exit (uvicorn's own). A stop
asked by SIGTERM ends with exit status 0, the orderly end a container or a service manager asks for; a
stop by Ctrl-C raises SIGINT again after it, as uvicorn does, so a shell sees how it ended (130).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("failsoft.server")

__all__ = ["Lifecycle", "Server"]


class Lifecycle:
    """Whether the process drains, and until when (a monotonic clock, injected in tests)."""

    __slots__ = ("clock", "drain_s", "draining", "until")

    def __init__(self, drain_s: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.drain_s = drain_s
        self.clock = clock
        self.draining = False
        self.until: float | None = None

    def drain(self) -> bool:
        """Start draining; False when there is no drain to start (``drain_s`` 0, or already draining)."""
        if self.drain_s <= 0 or self.draining:
            return False
        self.draining = True
        self.until = self.clock() + self.drain_s
        return True

    def drained(self) -> bool:
        """The drain has lasted ``drain_s``: time to stop."""
        return self.until is not None and self.clock() >= self.until


class Server(uvicorn.Server):
    """uvicorn's server, with the drain between a SIGTERM and its stop."""

    def __init__(self, config: uvicorn.Config, life: Lifecycle) -> None:
        super().__init__(config)
        self.life = life

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.started and not self.should_exit and self.life.drain():
            for connection in list(self.server_state.connections):
                drain: Any = getattr(connection, "drain", None)
                if drain is not None:  # failsoft's edge: each connection closes after its next answer
                    drain()
            log.warning(json.dumps({"event": "draining", "for_s": self.life.drain_s,
                                    "connections": len(self.server_state.connections)}))  # fmt: skip
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.life.drained() and not self.should_exit:
            log.warning(json.dumps({"event": "drained", "action": "stopping"}))
            self.should_exit = True
        return await super().on_tick(counter)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            yield
            # uvicorn raises each signal again once stopped; a SIGTERM stop is an orderly end: exit 0
            self._captured_signals = [s for s in self._captured_signals if s != signal.SIGTERM]
