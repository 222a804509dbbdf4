"""Real databases: a SQLite file, and PostgreSQL on 127.0.0.1:5432 (a fresh database per run). Under CI
the PostgreSQL tests fail, not skip, when the server cannot be reached. A private PostgreSQL (initdb in a
temporary folder, its own port) is started for the tests that stop the database on purpose."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from failsoft.demo.procs import free_port
from failsoft.store import Store, open_store
from tests.conftest import ADMIN_URL, unreachable  # noqa: F401  (pg_url is a root fixture)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'failsoft.db'}")
    else:
        url = request.getfixturevalue("pg_url")
        s = open_store(url)
        s.connect()
        # a clean slate per test on the shared test database
        s._locked(
            lambda c: c.execute(
                "TRUNCATE predictions, shadow_calls, model_state, state_events, episodes, audit_items, "
                "audit_actions, defaults"
            )
        )  # type: ignore[attr-defined]
    s.connect()
    yield s
    s.close()


class PrivatePostgres:
    """A PostgreSQL server of the test's own, which the test may stop and start."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins or shutil.which("runuser") is None:
            unreachable("no PostgreSQL server binaries (pg_ctl) on this machine")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="failsoft-pg-"))
        os.chmod(self.dir, 0o777)
        self.data = self.dir / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"])

    def _as_postgres(self, cmd: list[str]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            [
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                opts,
                "-l",
                str(self.dir / "log"),
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        self._as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    yield pg
    pg.remove()
