"""PostgreSQL store: for several replicas sharing one database (psycopg 3)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec

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

T = TypeVar("T")
_COLS = ", ".join(PREDICTION_COLUMNS)
_INSERT = (
    # The document is parsed once (jsonb, a materialized CTE); re-reading prefix and base from the text
    # per row would parse the whole batch once per row.
    "WITH p AS MATERIALIZED (SELECT d->>'prefix' AS prefix, (d->>'base')::bigint AS base, d->'rows' AS rows "
    "FROM (SELECT %s::jsonb AS d) AS x) "
    f"INSERT INTO predictions ({_COLS}) "
    "SELECT coalesce(r->>0, p.prefix || '-' || (p.base + o - 1)), "
    "r->>1, r->>2, r->>3, r->>4, r->>5, (r->>6)::boolean, r->>7, (r->8)::text, "
    "CASE WHEN jsonb_typeof(r->9) = 'null' THEN NULL ELSE (r->9)::text END, "
    "(r->>10)::float8, (r->>11)::float8 "
    "FROM p, jsonb_array_elements(p.rows) WITH ORDINALITY AS t(r, o) ON CONFLICT (record_id) DO NOTHING"
)
_INSERT_CALLS = (
    f"INSERT INTO shadow_calls ({', '.join(SHADOW_CALL_COLUMNS)}) VALUES ({', '.join(['%s'] * 9)}) "
    "ON CONFLICT (record_id) DO NOTHING"
)
# A lock number of our own, so two replicas starting together migrate one after the other.
_MIGRATION_LOCK = 0x6661696C736F6674


class PostgresStore(Store):
    dialect = "postgres"

    def __init__(self, url: str, connect_timeout_s: int = 2) -> None:
        self.url = url
        self._timeout = connect_timeout_s
        self._lock = threading.Lock()
        self._conn: Any = None
        self._migrated = False

    def _open(self) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self.url, connect_timeout=self._timeout, autocommit=True)
        except psycopg.Error as err:
            raise StoreUnavailable(f"{_safe(self.url)}: {err}".strip()) from err
        return conn

    def connect(self) -> None:
        with self._lock:
            self._run(lambda conn: None)

    def listen(self, changed: Callable[[], None], stopping: threading.Event) -> bool:
        """LISTEN on a connection of its own; a lost connection is opened again (and ``changed`` called,
        for what may have happened meanwhile) every second until ``stopping``."""
        import psycopg

        while not stopping.is_set():
            try:
                with psycopg.connect(self.url, connect_timeout=self._timeout, autocommit=True) as conn:
                    conn.execute("LISTEN failsoft_state")
                    changed()
                    while not stopping.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            changed()
            except psycopg.Error:
                stopping.wait(1.0)
        return True

    def _migrate(self, conn: Any) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
            "applied_at DOUBLE PRECISION NOT NULL)"
        )
        done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations").fetchall()}
        for version, statements in migrations(self.dialect):
            if version in done:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (version, self.now()))

    def _run(self, fn: Callable[[Any], T], atomic: bool = True) -> T:
        """Run ``fn`` (in one transaction when ``atomic``; a single statement is atomic by itself and saves
        two round trips); a broken connection is dropped and reopened on the next call."""
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = self._open()
                if not self._migrated:
                    with self._conn.transaction():
                        self._migrate(self._conn)
                    self._migrated = True
            if not atomic:
                return fn(self._conn)
            with self._conn.transaction():
                return fn(self._conn)
        except psycopg.Error as err:
            conn = self._conn
            if conn is not None and (conn.closed or conn.broken):
                self._conn = None
                conn.close()
            elif isinstance(err, psycopg.DataError | psycopg.IntegrityError):
                raise StoreRejected(f"{_safe(self.url)}: {err}".strip()) from err
            raise StoreUnavailable(f"{_safe(self.url)}: {err}".strip()) from err

    def _locked(self, fn: Callable[[Any], T], atomic: bool = True) -> T:
        with self._lock:
            return self._run(fn, atomic)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def insert_json(self, *payloads: bytes) -> int:
        parts = [_split(p) for p in payloads]
        calls = [c for _, cs in parts for c in cs]

        def write(conn: Any) -> int:
            n = sum(int(conn.execute(_INSERT, (text,)).rowcount) for text, _ in parts)
            if calls:
                with conn.cursor() as cur:
                    cur.executemany(_INSERT_CALLS, calls)
                    n += max(0, int(cur.rowcount))
            return n

        # One statement is atomic by itself: no BEGIN/COMMIT round trips for the common single batch.
        return self._locked(write, atomic=len(payloads) > 1 or bool(calls))

    def delete_predictions_before(self, ts: float) -> int:
        def delete(conn: Any) -> int:
            n = int(conn.execute("DELETE FROM predictions WHERE ts < %s", (ts,)).rowcount)
            return n + int(conn.execute("DELETE FROM shadow_calls WHERE ts < %s", (ts,)).rowcount)

        return self._locked(delete)

    def transaction(self, fn: Callable[[Execute], T]) -> T:
        def run(conn: Any) -> T:
            return fn(lambda sql, args: _fetch(conn, sql, args))

        return self._locked(run)

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._locked(lambda c: _fetch(c, sql, args), atomic=False)


def _split(payload: bytes) -> tuple[str, list[tuple[Any, ...]]]:
    """The batch document as the insert statement reads it, and its shadow calls (store/records.py) as
    rows for shadow_calls. A document without calls is passed on as it came."""
    if b',["' not in payload and b'"shadow"' not in payload:
        return payload.decode(), []  # no shadow role, no list of request ids (strings: it shows as ,[")
    rows, calls = split(payload)
    if not calls:
        return payload.decode(), []
    # every row carries its record id now: the statement needs no prefix nor base
    return msgspec.json.encode({"prefix": "", "base": 0, "rows": rows}).decode(), calls


def _fetch(conn: Any, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
    cur = conn.execute(sql.replace("?", "%s"), tuple(args))
    return list(cur.fetchall()) if cur.description else []


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
