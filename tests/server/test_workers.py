"""``failsoft serve --workers 2`` as a user runs it: both workers answer on one port, a worker killed with
kill -9 loses only what was in flight on it and is replaced, a stop ends them all, and a worker that cannot
start stops the start with exit 3."""

from __future__ import annotations

import http.client
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import joblib
import msgspec
import psutil
import tomli_w
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import Proc

CLIENTS = 4


def portfolio(tmp_path: Path, model: Path) -> Path:
    doc = {
        "trusted_model_dirs": [str(tmp_path)],
        "data_dir": str(tmp_path / "state"),
        "models": {
            "m": {
                "deadline_ms": 200,
                "inputs": [{"name": "a"}, {"name": "b"}],
                "output": {"type": "float", "min": 0, "max": 1},
                "tiers": [
                    {"name": "lr", "kind": "python", "path": str(model)},
                    {"kind": "default", "value": 0.5},
                ],
            }
        },
    }
    path = tmp_path / "portfolio.toml"
    path.write_bytes(tomli_w.dumps(doc).encode())
    return path


def workers_of(supervisor: int) -> list[int]:
    return [p.pid for p in psutil.Process(supervisor).children() if "--socket-fd" in p.cmdline()]


class Clients:
    """CLIENTS threads asking one after another, a new connection per request (so every failure is a
    request some worker had taken); each answer's id prefix says which worker process gave it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.failures: list[str] = []
        self.answered_by: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._ask, daemon=True) for _ in range(CLIENTS)]

    def _ask(self) -> None:
        body = msgspec.json.encode({"inputs": {"a": 0.5, "b": 1.5}})
        while not self.stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", "/v1/models/m/predict", body, {"Connection": "close"})
                reply = conn.getresponse()
                doc = msgspec.json.decode(reply.read())
                if reply.status != 200 or doc["tier"] != "lr":
                    self.failures.append(f"{reply.status} {doc}")
                else:
                    self.answered_by.append(doc["id"].split("-")[0])
            except (OSError, http.client.HTTPException) as err:
                self.failures.append(repr(err))
            finally:
                conn.close()

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_a_killed_worker_loses_only_its_requests_in_flight_and_is_replaced(tmp_path: Path) -> None:
    model = tmp_path / "lr.joblib"
    joblib.dump(LogisticRegression().fit([[0, 0], [1, 1], [0, 1], [1, 0]], [0, 1, 1, 0]), model)
    gw = Proc(
        [sys.executable, "-m", "failsoft.cli", "serve", str(portfolio(tmp_path, model)), "--workers", "2",
         "--log-level", "warning"],
        "/v2/health/ready", tmp_path / "gateway.log",
    ).start()  # fmt: skip
    assert gw.proc is not None
    try:
        deadline = time.monotonic() + 120
        while len(workers_of(gw.proc.pid)) < 2:
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        first = workers_of(gw.proc.pid)
        with Clients(gw.port) as clients:
            while len(set(clients.answered_by)) < 2:  # both workers answer on the one port
                assert time.monotonic() < deadline, f"answered by {set(clients.answered_by)}"
                time.sleep(0.1)
            before = set(clients.answered_by)
            psutil.Process(first[0]).kill()
            # the other worker goes on answering, and a new one replaces the killed one
            while not (set(clients.answered_by) - before) or len(workers_of(gw.proc.pid)) < 2:
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
                time.sleep(0.2)
            answered = len(clients.answered_by)
        # at most one request per client was in flight on the killed worker
        assert len(clients.failures) <= CLIENTS, clients.failures
        assert answered > 50
        assert first[0] not in workers_of(gw.proc.pid)
        log = (tmp_path / "gateway.log").read_text()
        assert '"event": "worker_died"' in log and "SIGKILL" in log
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(60) == 0
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in first[1:])
    finally:
        gw.kill()


def test_workers_that_cannot_start_stop_the_start_with_3(tmp_path: Path) -> None:
    model = tmp_path / "lr.joblib"
    model.write_bytes(b"not a model")
    run = subprocess.run(
        [sys.executable, "-m", "failsoft.cli", "serve", str(portfolio(tmp_path, model)), "--workers", "2",
         "--port", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr[-3000:]
    assert '"event": "workers_given_up"' in run.stderr
