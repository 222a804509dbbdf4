"""``failsoft serve --workers 2`` as a user runs it: both workers answer on one port, a worker killed with
kill -9 loses only what was in flight on it and is replaced, a stop ends them all, and a worker that cannot
start stops the start with exit 3. The workers' one log writer, killed with kill -9, is replaced and loses
no answer."""

from __future__ import annotations

import contextlib
import http.client
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import joblib
import msgspec
import psutil
import pytest
import tomli_w
from sklearn.linear_model import LogisticRegression

from failsoft.demo.procs import Proc
from failsoft.server.workers import one_log_writer

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


def log_writers(supervisor: int) -> list[psutil.Process]:
    """Every log writer under the supervisor, its workers' included."""
    found = []
    for p in psutil.Process(supervisor).children(recursive=True):
        try:
            if "failsoft.store.writer" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:  # gone (or a zombie) meanwhile
            pass
    return found


@contextlib.contextmanager
def two_workers(
    tmp_path: Path, writers: int, *extra: str
) -> Iterator[tuple[Proc, subprocess.Popen[bytes], float]]:
    """``failsoft serve --workers 2``, once both workers and ``writers`` log writers run under the
    supervisor: yields it, the supervisor's process and the test's deadline; killed at the end."""
    model = tmp_path / "lr.joblib"
    joblib.dump(LogisticRegression().fit([[0, 0], [1, 1], [0, 1], [1, 0]], [0, 1, 1, 0]), model)
    gw = Proc(
        [sys.executable, "-m", "failsoft.cli", "serve", str(portfolio(tmp_path, model)), "--workers", "2",
         "--log-level", "warning", *extra],
        "/v2/health/ready", tmp_path / "gateway.log",
    ).start()  # fmt: skip
    assert gw.proc is not None
    try:
        deadline = time.monotonic() + 120
        while len(workers_of(gw.proc.pid)) < 2 or len(log_writers(gw.proc.pid)) < writers:
            assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
            time.sleep(0.2)
        yield gw, gw.proc, deadline
    finally:
        gw.kill()


class Clients:
    """CLIENTS threads asking one after another, a new connection per request (so every failure is a
    request some worker had taken); each answer's id prefix says which worker process gave it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.failures: list[str] = []
        self.answered_by: list[str] = []
        self.ids: list[str] = []
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
                    self.ids.append(doc["id"])
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


@pytest.mark.parametrize("writers", ["shared", "per-worker"])
def test_a_killed_worker_loses_only_its_requests_in_flight_and_is_replaced(
    tmp_path: Path, writers: str
) -> None:
    want = 1 if writers == "shared" else 2
    with two_workers(tmp_path, want, "--log-writer", writers) as (gw, supervisor, deadline):
        assert len(log_writers(supervisor.pid)) == want
        first = workers_of(supervisor.pid)
        with Clients(gw.port) as clients:
            while len(set(clients.answered_by)) < 2:  # both workers answer on the one port
                assert time.monotonic() < deadline, f"answered by {set(clients.answered_by)}"
                time.sleep(0.1)
            before = set(clients.answered_by)
            psutil.Process(first[0]).kill()
            # the other worker goes on answering, and a new one replaces the killed one
            while not (set(clients.answered_by) - before) or len(workers_of(supervisor.pid)) < 2:
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
                time.sleep(0.2)
            answered = len(clients.answered_by)
        # at most one request per client was in flight on the killed worker
        assert len(clients.failures) <= CLIENTS, clients.failures
        assert answered > 50
        assert first[0] not in workers_of(supervisor.pid)
        log = (tmp_path / "gateway.log").read_text()
        assert '"event": "worker_died"' in log and "SIGKILL" in log
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
        assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in first[1:])


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


def test_the_workers_one_log_writer_killed_is_replaced_and_loses_no_answer(tmp_path: Path) -> None:
    with two_workers(tmp_path, 1) as (gw, supervisor, deadline):
        (writer,) = log_writers(supervisor.pid)  # one writer for both workers, the supervisor's child
        assert writer.ppid() == supervisor.pid
        with Clients(gw.port) as clients:
            while len(set(clients.answered_by)) < 2 or len(clients.ids) < 100:
                assert time.monotonic() < deadline, f"answered by {set(clients.answered_by)}"
                time.sleep(0.1)
            writer.kill()
            while not [p for p in log_writers(supervisor.pid) if p.pid != writer.pid]:
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()[-3000:]
                time.sleep(0.1)
            killed_at = len(clients.ids)
            while len(clients.ids) < killed_at + 100:  # answered, and logged, after the new writer came
                assert time.monotonic() < deadline, clients.failures[-3:]
                time.sleep(0.1)
        assert not clients.failures, clients.failures[:3]
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(90) == 0
        log = (tmp_path / "gateway.log").read_text()
        assert '"event": "log_writer_died"' in log and "SIGKILL" in log
        with sqlite3.connect(tmp_path / "state" / "failsoft.db") as db:
            logged = {row[0] for row in db.execute("SELECT request_id FROM predictions")}
        missing = set(clients.ids) - logged
        assert not missing, f"{len(missing)} of {len(clients.ids)} answers not logged"


def test_the_workers_share_a_log_writer_on_sqlite_and_have_one_each_on_postgresql() -> None:
    assert one_log_writer("auto", "sqlite:////srv/failsoft.db")
    assert not one_log_writer("auto", "postgresql://127.0.0.1/test")
    assert one_log_writer("shared", "postgresql://127.0.0.1/test")
    assert not one_log_writer("per-worker", "sqlite:////srv/failsoft.db")


def test_workers_whose_supervisor_is_killed_stop_rather_than_serve_on_unsupervised(tmp_path: Path) -> None:
    with two_workers(tmp_path, 1) as (_, supervisor, _):
        left = [psutil.Process(p) for p in workers_of(supervisor.pid)] + log_writers(supervisor.pid)
        supervisor.kill()
        supervisor.wait(30)
        _, alive = psutil.wait_procs(left, timeout=60)
        assert not alive, [p.cmdline() for p in alive]
        assert '"event": "supervisor_gone"' in (tmp_path / "gateway.log").read_text()
