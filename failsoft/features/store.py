"""Feature tables: entity key column(s), ``event_time`` (when it happened), ``available_at`` (when the row
landed) and feature columns, kept as Parquet under the data directory and queried with DuckDB, never
loaded whole into Python objects.

>>> fs = FeatureStore("failsoft-data/features")                                     # doctest: +SKIP
>>> fs.ingest("activity", "activity.parquet", entity=["user_id"], ttl_s=30 * 86400)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from failsoft.errors import ConfigError

RESERVED = ("event_time", "available_at")


class FeatureDataWarning(UserWarning):
    """Feature data that will quietly give an empty or leaky training set unless something changes."""


@dataclass(frozen=True)
class FeatureTable:
    name: str
    entity: list[str]
    features: list[str]
    ttl_s: float | None
    path: Path

    @property
    def glob(self) -> str:
        return str(self.path / "*.parquet")


def _duckdb() -> Any:
    try:
        import duckdb
    except ImportError:  # pragma: no cover - the extra is missing
        raise SystemExit("the feature store needs DuckDB: pip install 'failsoft[features]'") from None
    return duckdb


def connect() -> Any:
    """A DuckDB connection that reads and writes times in UTC whatever the host's zone: a zone-aware time
    (TIMESTAMPTZ) becomes its UTC wall time when cast to TIMESTAMP, and comes back as UTC."""
    con = _duckdb().connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


# Column names that usually say when a row landed (Feast's "created", warehouse load stamps).
LANDING_NAMES = ("created", "created_at", "created_timestamp", "ingested_at", "loaded_at", "_loaded_at",
                 "landed_at", "inserted_at", "updated_at")  # fmt: skip
# ... and when it happened.
EVENT_NAMES = ("event_timestamp", "event_ts", "timestamp", "ts", "event_date")


def relation_sql(source: Any) -> str:
    """A DuckDB table expression for a Parquet or CSV path."""
    path = str(source)
    if path.endswith(".parquet") or path.endswith("*.parquet"):
        return f"read_parquet('{path}')"
    if path.endswith(".csv"):
        return f"read_csv_auto('{path}')"
    raise ConfigError(path, "", "unsupported file", "use .parquet or .csv")


def register(con: Any, name: str, source: Any) -> list[str]:
    """Expose a Parquet/CSV path, DataFrame or pyarrow Table to DuckDB as ``name``; returns its columns."""
    if isinstance(source, str | Path):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {relation_sql(source)}")
    else:
        con.register(name, source)
    return [r[0] for r in con.execute(f"DESCRIBE {name}").fetchall()]


def lag_quantiles(con: Any, glob: str, since: float | None = None) -> tuple[Any, Any, Any]:
    """p50, p95 and max of ``available_at - event_time`` over a table's rows (those that landed at or
    after ``since``, when given); None each for no rows."""
    lag = "epoch(available_at) - epoch(event_time)"
    where = "" if since is None else f" WHERE epoch(available_at) >= {since}"
    row = con.execute(
        f"SELECT quantile_cont({lag}, 0.5), quantile_cont({lag}, 0.95), max({lag}) "
        f"FROM read_parquet('{glob}'){where}"
    ).fetchone()
    return row[0], row[1], row[2]


class FeatureStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """The tables ingested so far."""
        return sorted(p.name for p in self.root.glob("*") if (p / "_table.json").exists())

    def lag(self, name: str, now: float | None = None, window_s: float = 86400.0) -> dict[str, Any]:
        """Feature latency of one table: ``available_at - event_time`` (p50, p95, max) over the rows that
        landed in the last ``window_s`` before the newest one, the row and entity counts, and how long ago
        the newest value landed (``newest_age_s``, the pipeline's silence)."""
        t = self.table(name)
        con = connect()
        try:
            keys = ", ".join(f'"{k}"' for k in t.entity)
            n, k, newest_a, newest_e = con.execute(
                f"SELECT count(*), count(DISTINCT ({keys})), max(epoch(available_at)), "
                f"max(epoch(event_time)) FROM read_parquet('{t.glob}')"
            ).fetchone()
            if not n:
                return {"table": name, "rows": 0, "entities": 0}
            p50, p95, worst = lag_quantiles(con, t.glob, since=float(newest_a) - window_s)
        finally:
            con.close()
        now = time.time() if now is None else now
        return {
            "table": name,
            "rows": int(n),
            "entities": int(k),
            "newest_available_at": float(newest_a),
            "newest_event_time": float(newest_e),
            "newest_age_s": round(now - float(newest_a), 3),
            "lag_s": {"p50": float(p50), "p95": float(p95), "max": float(worst)},
            "lag_window_s": window_s,
        }

    def table(self, name: str) -> FeatureTable:
        meta = self.root / name / "_table.json"
        try:
            doc = json.loads(meta.read_text())
        except FileNotFoundError:
            known = self.names()
            raise ConfigError(
                str(self.root),
                name,
                "no such feature table",
                f"ingest it first; known: {', '.join(known) or 'none'}",
            ) from None
        return FeatureTable(name, doc["entity"], doc["features"], doc["ttl_s"], self.root / name)

    def ingest(
        self,
        name: str,
        source: Any,
        entity: list[str],
        event_time: str = "event_time",
        available_at: str | None = "available_at",
        ttl_s: float | None = None,
    ) -> FeatureTable:
        """Append rows from a Parquet/CSV path, a pandas/polars DataFrame or a pyarrow Table. Rows without
        an ``available_at`` column are stamped with the time of ingest (a warning names a column that looks
        like a landing time: pass it as ``available_at``). Times are kept in UTC."""
        duckdb = _duckdb()
        con = connect()
        try:
            cols = register(con, "src", source)
            missing = [c for c in [*entity, event_time] if c not in cols]
            if missing:
                fix = f"the source has: {', '.join(cols)}"
                named = next((c for c in EVENT_NAMES if c in cols), None)
                if event_time in missing and named is not None:
                    fix = f"the source's event time looks like {named!r}: --event-time-column {named}; {fix}"
                raise ConfigError(str(source), ", ".join(missing), "column not in the source", fix)
            if available_at is not None and available_at != "available_at" and available_at not in cols:
                raise ConfigError(
                    str(source),
                    available_at,
                    "column not in the source",
                    f"the source has: {', '.join(cols)}",
                )
            has_available = available_at is not None and available_at in cols
            landing = next((c for c in LANDING_NAMES if c in cols), None) if not has_available else None
            if landing is not None:
                warnings.warn(
                    f"{source}: no {available_at or 'available_at'} column, so every row is stamped as "
                    f"landed now, after every past prediction; column {landing!r} looks like when rows "
                    f"landed: ingest with --available-at-column {landing} (Python: available_at="
                    f"{landing!r}) to use it",
                    FeatureDataWarning,
                    stacklevel=2,
                )
            features = [c for c in cols if c not in {*entity, event_time, available_at or ""}]
            clash = [c for c in features if c in RESERVED]
            if clash:
                raise ConfigError(
                    str(source),
                    ", ".join(clash),
                    "a feature column has a name the store keeps for itself",
                    "name the source's time columns with --event-time-column / --available-at-column, or "
                    "rename the feature",
                )
            stamp = (
                f"CAST({available_at} AS TIMESTAMP)"
                if has_available
                else f"make_timestamp({int(time.time() * 1e6)}::BIGINT)"
            )
            select = ", ".join(
                [
                    *(f'"{c}"' for c in entity),
                    f'CAST("{event_time}" AS TIMESTAMP) AS event_time',
                    f"{stamp} AS available_at",
                    *(f'"{c}"' for c in features),
                ]
            )
            folder = self.root / name
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "_table.json"
            if meta.exists():
                old = json.loads(meta.read_text())
                if old["entity"] != entity or old["features"] != features:
                    raise ConfigError(
                        str(meta),
                        name,
                        "the new rows do not have the table's columns",
                        f"entity {old['entity']}, features {old['features']}",
                    )
            out = folder / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}.parquet"
            # Sorted by entity and time: point-in-time joins and the online lookup read it a third faster.
            order = ", ".join([*(f'"{c}"' for c in entity), "event_time", "available_at"])
            try:
                con.execute(f"COPY (SELECT {select} FROM src ORDER BY {order}) TO '{out}' (FORMAT parquet)")
            except duckdb.ConversionException as err:
                out.unlink(missing_ok=True)
                times = f"{event_time}" + (f" or {available_at}" if has_available else "")
                raise ConfigError(
                    str(source),
                    times,
                    f"cannot be read as a date and time ({str(err).splitlines()[0][:160]})",
                    "write times as timestamps or ISO-8601 text, e.g. 2026-11-01T12:00:00Z",
                ) from None
        finally:
            con.close()
        table = FeatureTable(name, entity, features, ttl_s, folder)
        meta.write_text(json.dumps({k: v for k, v in asdict(table).items() if k not in {"name", "path"}}))
        return table
