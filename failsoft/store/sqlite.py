"""SQLite store: the embedded default (WAL, one file under the data directory, no server)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from failsoft.store.base import (
    PREDICTION_COLUMNS,
    SHADOW_CALL_COLUMNS,
    Execute,
    Store,
    StoreRejected,
    StoreUnavailable,
)
from failsoft.store.migrations import migrations
from failsoft.store.records import split

_INSERT = (
    f"INSERT OR IGNORE INTO predictions ({', '.join(PREDICTION_COLUMNS)}) VALUES ({', '.join('?' * 12)})"
)
_INSERT_CALLS = (
    f"INSERT OR IGNORE INTO shadow_calls ({', '.join(SHADOW_CALL_COLUMNS)}) VALUES ({', '.join('?' * 9)})"
)


def _rows(payload: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """A batch document as prediction rows and shadow calls to insert: ids filled in, outputs and inputs
    as JSON text. The writer is a process of its own, so decoding here holds up nobody; bound rows cost
    SQLite a third less than extracting each column with its JSON functions."""
    rows, calls = split(payload)
    return (
        [(*r[:8], str(r[8], "utf-8"), None if r[9] is None else str(r[9], "utf-8"), *r[10:]) for r in rows],
        calls,
    )


T = TypeVar("T")


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(self, path: Path, busy_timeout_ms: int = 200) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        self._busy_ms = busy_timeout_ms
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_ms / 1000, check_same_thread=False, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a committed batch survives a power cut
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages: the log's indexes stay in memory
            self._conn = conn
            self._migrate(conn)
        except (sqlite3.Error, OSError) as err:
            raise StoreUnavailable(f"{self.url}: {err}") from err

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                    "applied_at REAL NOT NULL)"
                )
                done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
                for version, statements in migrations(self.dialect):
                    if version in done:
                        continue
                    for sql in statements:
                        conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, self.now()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self.connect()
        assert self._conn is not None
        return self._conn

    def _write(self, fn: Any) -> Any:
        with self._lock:
            conn = self._db()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return result
            except (sqlite3.IntegrityError, sqlite3.DataError) as err:
                raise StoreRejected(f"{self.url}: {err}") from err
            except sqlite3.Error as err:
                if "malformed JSON" in str(err):
                    raise StoreRejected(f"{self.url}: {err}") from err
                raise StoreUnavailable(f"{self.url}: {err}") from err

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db().execute(sql, args).fetchall()
            except sqlite3.Error as err:
                raise StoreUnavailable(f"{self.url}: {err}") from err

    def insert_json(self, *payloads: bytes) -> int:
        def write(conn: sqlite3.Connection) -> int:
            before = conn.total_changes  # rows inserted, not those ignored as already there
            for payload in payloads:
                rows, calls = _rows(payload)
                conn.executemany(_INSERT, rows)
                if calls:
                    conn.executemany(_INSERT_CALLS, calls)
            return conn.total_changes - before

        written: int = self._write(write)
        return written

    def delete_predictions_before(self, ts: float) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM predictions WHERE ts < ?", (ts,)).rowcount
            return n + conn.execute("DELETE FROM shadow_calls WHERE ts < ?", (ts,)).rowcount

        deleted: int = self._write(delete)
        return deleted

    def transaction(self, fn: Callable[[Execute], T]) -> T:
        def run(conn: sqlite3.Connection) -> T:
            def execute(sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return conn.execute(sql, tuple(args)).fetchall()

            return fn(execute)

        result: T = self._write(run)
        return result

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if sql.lstrip()[:6].upper() == "SELECT":  # a read takes no write lock
            rows: list[tuple[Any, ...]] = self._read(sql, args)
            return rows
        rows = self._write(lambda c: c.execute(sql, tuple(args)).fetchall())
        return rows
