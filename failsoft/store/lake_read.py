"""Reading the lake (store/lake.py) with DuckDB, as the database's log is read: the same tables and views
(``predictions``, ``shadow_calls``, ``shadow_predictions``), so `failsoft export`, shadow judging and the
offline monitor commands ask it the same questions. Labels stay in the store; the lake reads them from
there when a question joins them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from failsoft.errors import ConfigError
from failsoft.store import open_store
from failsoft.store.base import PREDICTION_COLUMNS, SHADOW_CALL_COLUMNS, LogReader, Store, StoreError
from failsoft.store.lake import _schema

if TYPE_CHECKING:
    from failsoft.config import PortfolioSpec

_SHADOW_VIEW = """CREATE OR REPLACE VIEW shadow_predictions AS
    SELECT record_id || '.' || (generate_subscripts(ids, 1) - 1) AS record_id, unnest(ids) AS request_id,
    model, version, tier, 'shadow' AS role, false AS degraded, reason, unnest(outs)::VARCHAR AS outputs,
    NULL::VARCHAR AS inputs, latency_ms, ts
    FROM (SELECT *, from_json(request_ids, '["VARCHAR"]') AS ids, from_json(outputs, '["JSON"]') AS outs
          FROM shadow_calls)"""


class LakeLog(LogReader):
    """The lake at ``root`` as DuckDB views over its Parquet files; ``store`` gives the labels."""

    dialect = "duckdb"

    def __init__(self, root: Path, store: Store | None = None) -> None:
        import duckdb

        if not root.is_dir():
            raise StoreError(f"{root}: no lake there (`failsoft log land` writes it)")
        self.root = root
        self.store = store
        self.url = f"lake:{root}"
        self._db = duckdb.connect(":memory:")
        self._lock = threading.Lock()
        self._labels_loaded = False
        for table, columns in (("predictions", PREDICTION_COLUMNS), ("shadow_calls", SHADOW_CALL_COLUMNS)):
            files = sorted(str(p) for p in (root / table).glob("*/*/*.parquet"))
            if files:
                listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
                self._db.execute(
                    f"CREATE VIEW {table} AS SELECT {', '.join(columns)} FROM read_parquet([{listed}])"
                )
            else:
                schema = _schema(table)
                cols = ", ".join(f"{n} {_duck(t)}" for n, t in zip(schema.names, schema.types, strict=True))
                self._db.execute(f"CREATE TABLE {table} ({cols})")
        self._db.execute(_SHADOW_VIEW)

    def _labels(self) -> None:
        """The store's labels as a table beside the lake's (once, when a question first joins them)."""
        if self._labels_loaded:
            return
        rows = (
            self.store.execute("SELECT request_id, label, label_time, received_at FROM labels")
            if self.store
            else []
        )
        self._db.execute("CREATE TABLE labels (request_id VARCHAR, label VARCHAR, label_time DOUBLE, "
                         "received_at DOUBLE)")  # fmt: skip
        if rows:
            self._db.executemany("INSERT INTO labels VALUES (?, ?, ?, ?)", [list(r) for r in rows])
        self._labels_loaded = True

    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            if "labels" in sql:
                self._labels()
            return self._db.execute(sql, list(args)).fetchall()

    def close(self) -> None:
        self._db.close()


def _duck(arrow_type: Any) -> str:
    return {"string": "VARCHAR", "double": "DOUBLE", "bool": "BOOLEAN"}[str(arrow_type)]


def log_reader(spec: PortfolioSpec, store: Store | None = None, *, required: bool = True) -> LogReader:
    """Where a portfolio's prediction log is read: the lake when the log goes to a stream (``store``, the
    state store, gives it the labels), else the store (opened here when not given). ``required``: a stream
    log with no lake set is a ConfigError (the export); otherwise, and while nothing is landed yet, the
    store answers (shadow judging: no evidence there yet)."""
    if spec.store.log is not None:
        lake = spec.lake_dir()
        if lake is not None and (required or lake.is_dir()):
            return LakeLog(lake, store)
        if required:
            raise ConfigError(spec.file, "[store] lake", "the log goes to a stream and is read from the lake",
                              'set lake = "lake" and run `failsoft log land`')  # fmt: skip
    if store is None:
        store = open_store(spec.store_url())
        store.connect()
    return store
