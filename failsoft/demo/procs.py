"""Child processes on loopback for the demo, the benchmarks and the tests: a free port, a readiness wait,
and a process that can be started, killed and started again."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def serve_command(portfolio: Path | str, port: int, *extra: str, log_level: str = "warning") -> list[str]:
    """``failsoft serve`` of ``portfolio`` on ``port``, with this interpreter."""
    return [sys.executable, "-m", "failsoft.cli", "serve", str(portfolio), "--port", str(port),
            "--log-level", log_level, *extra]  # fmt: skip


def niced(args: list[str], level: int = 10) -> list[str]:
    """``args`` run at a lower CPU priority: the stand-in for a remote serving box shares this machine's
    cores with the gateway, and must not starve it the way a separate box never could."""
    nice = shutil.which("nice")
    return [nice, "-n", str(level), *args] if nice else args


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until ``url`` answers 200; raises RuntimeError if the process exits or time runs out."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f}s")


class Proc:
    """A server process on its own loopback port; ``--port N`` is appended to its arguments."""

    def __init__(
        self, args: list[str], ready_path: str, log: Path, port: int | None = None, remote: bool = False
    ) -> None:
        """``remote``: the process plays a box of its own (a serving engine), so it runs niced."""
        self.args = niced(args) if remote else args
        self.ready_path, self.log = ready_path, log
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([*self.args, "--port", str(self.port)], stdout=fh, stderr=fh)
        wait_http(self.url + self.ready_path, self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
