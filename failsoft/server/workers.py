"""``failsoft serve --workers N``: N serving processes behind one listening socket.

The supervisor binds the socket and starts N workers (``failsoft serve ... --socket-fd FD``), each a
whole gateway with its own event loop, models and prediction-log writer. They share the socket's one
accept queue: the kernel hands each new connection to a worker that is waiting for one, so a worker that
dies loses only the connections it had taken, and connections not yet taken wait in the queue for the
others. (SO_REUSEPORT would give each worker a queue of its own, and a dying worker would take its queue's
connections with it.) Model state (health, audits, promotions, shadows) is shared through the store, as
replicas on several machines share it; each worker's metrics and console history are its own.

A worker that dies is replaced at once; one that fails to start (exit 3: a model that would not load, a
tier that cannot answer) stops the whole start with that code, and one that keeps dying within seconds
of its start is given up on. SIGTERM or SIGINT stops every worker gracefully (each finishes the requests
it holds).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("failsoft.server")
# A worker that exits this soon after its start counts as a failed start; this many in a row end it.
QUICK_EXIT_S = 10.0
MAX_QUICK_EXITS = 5
# Seconds the workers get to finish their requests on a stop, before they are killed.
STOP_GRACE_S = 15.0
POLL_S = 0.1


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket every worker inherits."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


def _event(**fields: Any) -> None:
    level = logging.WARNING if fields["event"] in {"worker_died", "workers_given_up"} else logging.INFO
    log.log(level, json.dumps(fields))


class Supervisor:
    """Starts ``n`` workers from ``command(fd)`` (the argv of one worker serving on descriptor ``fd``),
    replaces those that die, stops them all on a signal."""

    def __init__(
        self, sock: socket.socket, n: int, command: Callable[[int], list[str]], clock: Callable[[], float]
    ) -> None:
        self.sock = sock
        self.n = n
        self.command = command
        self.clock = clock
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.quick_exits: dict[int, int] = dict.fromkeys(range(n), 0)
        self.stopping = False

    def spawn(self, i: int) -> None:
        fd = self.sock.fileno()
        self.procs[i] = subprocess.Popen(self.command(fd), pass_fds=(fd,))
        self.started[i] = self.clock()
        _event(event="worker_started", worker=i, pid=self.procs[i].pid)

    def run(self) -> int:
        """Serve until a signal; the exit code (3 when the workers could not start)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_signal)
        for i in range(self.n):
            self.spawn(i)
        code = 0
        while not self.stopping:
            time.sleep(POLL_S)
            for i, proc in list(self.procs.items()):
                rc = proc.poll()
                if rc is None or self.stopping:
                    continue
                code = self._exited(i, proc, rc)
                if code:
                    self.stopping = True
                    break
        self.stop()
        return code

    def _exited(self, i: int, proc: subprocess.Popen[bytes], rc: int) -> int:
        """A worker's exit: replaced, or the code the supervisor must stop with."""
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
        if rc == 3:  # it could not start: every other worker would fail the same way
            _event(event="workers_given_up", worker=i, pid=proc.pid, how=how,
                   reason="a worker could not start (see its error above)")  # fmt: skip
            return 3
        lived = self.clock() - self.started[i]
        self.quick_exits[i] = self.quick_exits[i] + 1 if lived < QUICK_EXIT_S else 0
        if self.quick_exits[i] >= MAX_QUICK_EXITS:
            _event(event="workers_given_up", worker=i, pid=proc.pid, how=how,
                   reason=f"died {MAX_QUICK_EXITS} times within {QUICK_EXIT_S:g} s of its start")  # fmt: skip
            return 1
        _event(event="worker_died", worker=i, pid=proc.pid, how=how, lived_s=round(lived, 1),
               action="replaced")  # fmt: skip
        self.spawn(i)
        return 0

    def _stop_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def stop(self) -> None:
        """SIGTERM to every worker still running, then their exits; killed after STOP_GRACE_S."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE_S
        for p in live:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.sock.close()


def supervise(
    host: str, port: int, n: int, command: Callable[[int], list[str]], log_level: str = "info"
) -> int:
    """Bind ``host:port`` and serve from ``n`` workers until stopped; the exit code."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    try:
        sock = listen(host, port)
    except OSError as err:
        log.error(json.dumps({"event": "cannot_listen", "host": host, "port": port, "error": str(err),
                              "fix": "stop what holds the port, or pass another --port"}))  # fmt: skip
        return 1
    _event(event="workers", workers=n, cores=cores(), host=host, port=sock.getsockname()[1])
    return Supervisor(sock, n, command, time.monotonic).run()


def worker_command(args: list[str]) -> Callable[[int], list[str]]:
    """The argv of one worker: ``failsoft serve`` with ``args`` on an inherited descriptor."""
    return lambda fd: [sys.executable, "-m", "failsoft.cli", "serve", *args, "--socket-fd", str(fd)]
