"""Worker processes forked from a ready one (a fork server), not started afresh.

A worker started afresh imports its libraries (numpy, msgspec, failsoft's tier code: about a quarter of a
second of CPU) before it loads its model. A faulty model's worker is replaced again and again (each time
it spins past its timeout or runs out of memory), and on a small machine those starts were most of what
the faults cost every other model. So the serving process starts one fork server the first time a
``run = "process"`` tier needs a worker: an interpreter, niced as workers are, that has imported what a
worker needs and forks one for each request; the child then only loads its model.

The serving process makes the worker's pipes and hands their far ends to the server over a Unix socket
(SCM_RIGHTS), with the worker's arguments; the server forks, and answers with the child's pid and a
pidfd, through which the serving process sees it exit and kills it, though it is the server's child (the
server reaps it). When the socket closes (the serving process exits, even by kill -9), the server exits,
and its workers, whose pipes close, with it. If the server dies, the next worker starts a new one; where
there are no pidfds (not Linux), workers are started afresh (tiers/pool.py).

The server's own loop is in tiers/worker.py (``python -m failsoft.tiers.worker --fork-server FD``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import IO

from failsoft.tiers.frames import PID, READY

log = logging.getLogger("failsoft.tiers.forks")
AVAILABLE = hasattr(os, "pidfd_open") and hasattr(signal, "pidfd_send_signal") and hasattr(socket, "send_fds")


async def join_pipes(
    stdin: IO[bytes], stdout: IO[bytes]
) -> tuple[asyncio.StreamWriter, asyncio.StreamReader]:
    """A worker's stdin and stdout (our ends) as streams on the event loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdout)
    transport, protocol = await loop.connect_write_pipe(lambda: asyncio.streams.FlowControlMixin(), stdin)
    return asyncio.StreamWriter(transport, protocol, None, loop), reader


class Forked:
    """A worker forked by the server: its pid, a pidfd, its pipes on the event loop; the face of
    tiers/pool.py's ``Spawned`` (its exit code is the server's to know: -1 once it has exited)."""

    def __init__(
        self, pid: int, pidfd: int, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader
    ) -> None:
        self.pid, self.pidfd, self.stdin, self.stdout = pid, pidfd, stdin, stdout
        self._exited = False

    @property
    def returncode(self) -> int | None:
        if not self._exited and self.pidfd >= 0:
            self._exited = bool(select.select([self.pidfd], [], [], 0)[0])
        return -1 if self._exited or self.pidfd < 0 else None

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)

    async def wait(self) -> int:
        """Until it has exited (its pidfd readable); the pidfd is closed then."""
        if self.pidfd >= 0:
            if self.returncode is None:
                loop = asyncio.get_running_loop()
                exited: asyncio.Future[None] = loop.create_future()

                def readable() -> None:
                    if not exited.done():
                        exited.set_result(None)

                loop.add_reader(self.pidfd, readable)
                try:
                    await exited
                finally:
                    loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd, self._exited = -1, True
        return -1


class ForkServer:
    """The serving process's end: starts the server when first asked, again if it has died."""

    def __init__(self, boot: str, start_timeout_s: float) -> None:
        # ``boot``: the worker's ``python -c`` (tiers/pool.py's BOOT: niced before it imports anything,
        # so the server's children are too), given ``--fork-server FD``
        self.boot, self.start_timeout_s = boot, start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()  # one request at a time on the socket (asked from threads)
        self.broken = False  # it would not start: workers are started afresh from then on

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = [sys.executable, "-c", self.boot, "--fork-server", str(theirs.fileno())]
            self._proc = subprocess.Popen(argv, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
            atexit.register(self.close)
        finally:
            theirs.close()
        ours.settimeout(self.start_timeout_s)
        if ours.recv(16) != READY:
            ours.close()
            raise OSError("the fork server did not start")
        return ours

    def _ask(self, args: bytes, stdin: int, stdout: int) -> tuple[int, int]:
        with self._lock:
            if self._sock is None or self._proc is None or self._proc.poll() is not None:
                self.close()
                try:
                    self._sock = self._start()
                except OSError:
                    self.broken = True
                    raise
            try:
                socket.send_fds(self._sock, [args], [stdin, stdout])
                msg, fds, _, _ = socket.recv_fds(self._sock, 64, 1)
            except OSError:
                self.close()  # started again by the next request
                raise
            if len(msg) != PID.size or len(fds) != 1:
                for fd in fds:
                    os.close(fd)
                self.close()
                raise OSError("the fork server answered nothing")
            return PID.unpack(msg)[0], fds[0]

    async def fork(self, args: bytes) -> Forked:
        """A worker of ``args`` (tiers/worker.py's), its pipes joined to the event loop."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        try:
            pid, pidfd = await asyncio.to_thread(self._ask, args, stdin_r, stdout_w)
        except BaseException:
            for fd in (stdin_w, stdout_r):
                os.close(fd)
            raise
        finally:
            os.close(stdin_r)
            os.close(stdout_w)
        try:
            stdin, stdout = await join_pipes(os.fdopen(stdin_w, "wb", 0), os.fdopen(stdout_r, "rb", 0))
        except BaseException:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
            raise
        return Forked(pid, pidfd, stdin, stdout)

    def close(self) -> None:
        atexit.unregister(self.close)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._proc.wait()
            self._proc = None
