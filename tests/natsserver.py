"""A private NATS server with JetStream for the stream tests and benchmarks: Debian's ``nats-server``, on a
free loopback port, its store in a folder of the caller's; never the machine's shared one. It can be
stopped and started again on the same port and store (a broker outage). Under CI a missing server fails
the test (``.ci/nats`` installs it); elsewhere the test is skipped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.path.exists(p)), None
    )
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is required under CI (.ci/nats installs it)")
        pytest.skip("nats-server is not installed (apt-get install nats-server)")
    return found


class NatsServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        argv = [binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.folder / "js")]
        with (self.folder / "server.log").open("ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("nats-server did not listen within 20 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
