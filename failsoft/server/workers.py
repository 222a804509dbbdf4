"""``failsoft serve --workers N``: N serving processes behind one listening socket.

The supervisor binds the socket and starts N workers (``failsoft serve ... --socket-fd FD``), each a
whole gateway with its own event loop and models. They share the socket's one
accept queue: the kernel hands each new connection to a worker that is waiting for one, so a worker that
dies loses only the connections it had taken, and connections not yet taken wait in the queue for the
others. (SO_REUSEPORT would give each worker a queue of its own, and a dying worker would take its queue's
connections with it.) Model state (health, audits, promotions, shadows) is shared through the store, as
replicas on several machines share it; each worker's metrics and console history are its own.

With SQLite (or ``--log-writer shared``), the prediction log has one writer for all the workers: the
supervisor holds a Unix socket, starts the writer (store/writer.py) on it before the workers, restarts it
when it dies (each worker connects again and sends what it had not acknowledged), and stops it after the
workers, once each has handed it its last records. One writer groups every worker's records into the same
transactions; SQLite takes one writer at a time anyway. With PostgreSQL (or ``--log-writer
per-worker``), each worker has a writer of its own, as one process has, and they write in parallel. A
worker whose supervisor dies stops by itself (server/run.py).

A worker that dies is replaced at once; one that fails to start (exit 3: a model that would not load, a
tier that cannot answer) stops the whole start with that code, and one that keeps dying within seconds
of its start is given up on. SIGTERM or SIGINT stops every worker gracefully (each finishes the requests
it holds).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("failsoft.server")
# A worker that exits this soon after its start counts as a failed start; this many in a row end it.
QUICK_EXIT_S = 10.0
MAX_QUICK_EXITS = 5
# Seconds the workers get to finish their requests on a stop, before they are killed.
STOP_GRACE_S = 15.0
POLL_S = 0.1
# A log writer that dies is restarted at most this often.
WRITER_RESTART_S = 1.0
# Seconds the shared log writer gets to write out what the workers left it, before it is killed.
WRITER_STOP_S = 30.0


CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cores(cpu_max: Path = CPU_MAX) -> int:
    """The cores this process may use: those it may run on, and no more than its container's CPU quota
    (cgroup v2 ``cpu.max``, "QUOTA PERIOD" or "max PERIOD"), rounded up."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or no quota
        pass
    return n


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """The listening socket: bound before anything loads (a port in use is said at once), served on by
    this process or inherited by every worker."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.set_inheritable(True)
    return sock


def cannot_listen(host: str, port: int, err: OSError) -> str:
    """Why ``host:port`` cannot be served on, and the fix."""
    where = f"{host}:{port}"
    if err.errno == errno.EADDRINUSE:
        return (f"{where} is in use (another gateway still running?): stop what holds it (ss -ltnp "
                f"'sport = :{port}' names it), or pass another --port")  # fmt: skip
    if err.errno == errno.EACCES:
        return f"{where}: ports below 1024 need privileges; pass --port 8000 or another above 1023"
    return f"cannot listen on {where}: {err.strerror or err}; pass another --host or --port"


def _event(**fields: Any) -> None:
    level = (
        logging.WARNING
        if fields["event"] in {"worker_died", "workers_given_up", "log_writer_died"}
        else logging.INFO
    )
    log.log(level, json.dumps(fields))


class SharedWriter:
    """The one prediction-log writer of every worker: its listening Unix socket is held here, so the
    workers' connections wait in its queue while a writer restarts."""

    def __init__(self, argv: Callable[[int], list[str]], clock: Callable[[], float]) -> None:
        self.argv = argv
        self.clock = clock
        self.folder = tempfile.mkdtemp(prefix="failsoft-log-")  # 0700: only this user connects
        self.path = os.path.join(self.folder, "writer.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(256)
        self.sock.set_inheritable(True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0

    def start(self) -> None:
        fd = self.sock.fileno()
        self.proc = subprocess.Popen(self.argv(fd), pass_fds=(fd,), stdin=subprocess.PIPE)
        self.started = self.clock()
        _event(event="log_writer_started", pid=self.proc.pid, socket=self.path)

    def check(self) -> None:
        """Restart the writer if it died (at most once every WRITER_RESTART_S)."""
        proc = self.proc
        if proc is None or proc.poll() is None or self.clock() - self.started < WRITER_RESTART_S:
            return
        rc = proc.returncode
        how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit {rc}"
        self.restarts += 1
        _event(event="log_writer_died", pid=proc.pid, how=how, action="replaced", restarts=self.restarts)
        self.start()

    def stop(self) -> None:
        """Its stdin closed: it writes out what it holds and ends (killed after WRITER_STOP_S)."""
        proc = self.proc
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            try:
                proc.wait(WRITER_STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.sock.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class Supervisor:
    """Starts ``n`` workers from ``command(fd)`` (the argv of one worker serving on descriptor ``fd``),
    replaces those that die, stops them all on a signal."""

    def __init__(
        self,
        sock: socket.socket,
        n: int,
        command: Callable[[int], list[str]],
        clock: Callable[[], float],
        writer: SharedWriter | None = None,
        drain_s: float = 0.0,
    ) -> None:
        self.sock = sock
        # a worker's drain ([server] drain_s), then its graceful stop, before it is killed
        self.grace_s = drain_s + STOP_GRACE_S
        self.signal = signal.SIGTERM  # the one that stops the supervisor
        self.n = n
        self.command = command
        self.clock = clock
        self.writer = writer
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.started: dict[int, float] = {}
        self.quick_exits: dict[int, int] = dict.fromkeys(range(n), 0)
        self.stopping = False

    def spawn(self, i: int) -> None:
        fd = self.sock.fileno()
        argv = self.command(fd)
        if self.writer is not None:
            argv += ["--log-socket", self.writer.path]
        self.procs[i] = subprocess.Popen(argv, pass_fds=(fd,))
        self.started[i] = self.clock()
        _event(event="worker_started", worker=i, pid=self.procs[i].pid)

    def _reload_signal(self, signum: int, frame: object) -> None:
        """SIGHUP: every worker reads portfolio.toml again (server/reloads.py)."""
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    def run(self) -> int:
        """Serve until a signal; the exit code (3 when the workers could not start)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop_signal)
        signal.signal(signal.SIGHUP, self._reload_signal)
        if self.writer is not None:
            self.writer.start()
        for i in range(self.n):
            self.spawn(i)
        code = 0
        while not self.stopping:
            time.sleep(POLL_S)
            if self.writer is not None:
                self.writer.check()
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
        self.signal = signal.Signals(signum)
        self.stopping = True

    def stop(self) -> None:
        """SIGTERM to every worker still running (each drains, then stops), then their exits (killed after
        ``grace_s``: their drain and STOP_GRACE_S); then the shared log writer, once every worker has
        handed it its last records."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)  # each worker drains (server/lifecycle.py), then stops
            if self.signal == signal.SIGINT:  # Ctrl-C: a second SIGTERM ends the drain at once
                p.send_signal(signal.SIGTERM)
        end = time.monotonic() + self.grace_s
        for p in live:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.sock.close()
        if self.writer is not None:
            self.writer.stop()


def supervise(
    sock: socket.socket,
    n: int,
    command: Callable[[int], list[str]],
    log_level: str = "info",
    writer: Callable[[int], list[str]] | None = None,
    drain_s: float = 0.0,
) -> int:
    """Serve from ``n`` workers on ``sock`` (bound by ``listen``) until stopped; the exit code. ``writer``:
    the argv of the shared log writer on a listening descriptor (None: each worker starts its own)."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), format="%(message)s")
    host, port = sock.getsockname()[:2]
    _event(event="workers", workers=n, cores=cores(), host=host, port=port)
    shared = SharedWriter(writer, time.monotonic) if writer is not None else None
    return Supervisor(sock, n, command, time.monotonic, shared, drain_s).run()


def one_log_writer(choice: str, store_url: str) -> bool:
    """Whether the workers share one log writer (``--log-writer``: shared, per-worker, or auto: shared with
    SQLite, whose one file takes one writer at a time)."""
    return choice == "shared" or (choice == "auto" and store_url.startswith("sqlite"))


def worker_command(args: list[str]) -> Callable[[int], list[str]]:
    """The argv of one worker: ``failsoft serve`` with ``args`` on an inherited descriptor."""
    return lambda fd: [sys.executable, "-m", "failsoft.cli", "serve", *args, "--socket-fd", str(fd)]
