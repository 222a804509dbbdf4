"""Point-in-time training sets: each spine row gets, per feature table, the value that was really there at
its ``prediction_time``.

Per spine row and table: among rows with ``available_at <= prediction_time`` and ``event_time <=
prediction_time``, the one with the greatest ``event_time`` (ties: the latest ``available_at``); none when
it is older than the table's TTL (``prediction_time - event_time > ttl``). One output row per spine row,
in spine order, nulls where nothing qualifies. Joining on ``event_time`` alone would hand a model values
that only landed after the prediction (late corrections, a field cleared after the outcome): label leakage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from failsoft.errors import ConfigError
from failsoft.features.store import FeatureStore, _duckdb, register, relation_sql


def training_set_sql(spine: str, spine_cols: list[str], tables: list[Any], time_col: str) -> str:
    parts = [f"spine AS (SELECT *, row_number() OVER () AS __row FROM {spine})"]
    joins, picks = [], []
    for i, t in enumerate(tables):
        on = " AND ".join(f's."{k}" = f."{k}"' for k in t.entity)
        ttl = ""
        if t.ttl_s is not None:
            ttl = f" AND s.\"{time_col}\" - f.event_time <= INTERVAL '{t.ttl_s} seconds'"
        # The newest qualifying row per spine row: (event_time, available_at) packed into one 128-bit key
        # for arg_max, a third faster than a window; the struct keeps a Null value (arg_max would skip a
        # Null value, and take an older one in its place).
        key = "(epoch_us(f.event_time)::HUGEINT << 64) + epoch_us(f.available_at)"
        packed = ", ".join(f'"{c}" := f."{c}"' for c in t.features)
        plain = ", ".join(f'__v."{c}" AS "{c}"' for c in t.features)
        parts.append(
            f"t{i} AS (SELECT __row, {plain} FROM ("
            f"SELECT s.__row, arg_max(struct_pack({packed}), {key}) AS __v "
            f"FROM spine s JOIN read_parquet('{t.glob}') f ON {on} "
            f'AND f.event_time <= s."{time_col}" AND f.available_at <= s."{time_col}"{ttl} '
            f"GROUP BY s.__row))"
        )
        joins.append(f"LEFT JOIN t{i} ON t{i}.__row = spine.__row")
        picks += [f't{i}."{c}"' for c in t.features]
    cols = ", ".join([*(f'spine."{c}"' for c in spine_cols), *picks])
    return f"WITH {', '.join(parts)} SELECT {cols} FROM spine {' '.join(joins)} ORDER BY spine.__row"


def build_training_set(
    store: FeatureStore,
    spine: Any,
    tables: list[str],
    out: str | Path | None = None,
    time_col: str = "prediction_time",
) -> Any:
    """The training set as a pyarrow Table (also written to ``out``, Parquet or CSV, when given)."""
    duckdb = _duckdb()
    specs = [store.table(name) for name in tables]
    con = duckdb.connect()
    try:
        spine_cols = register(con, "spine_src", spine)
        missing = {k for t in specs for k in t.entity} | {time_col}
        missing -= set(spine_cols)
        if missing:
            raise ConfigError(
                str(spine),
                ", ".join(sorted(missing)),
                "column not in the spine",
                f"the spine has: {', '.join(spine_cols)}",
            )
        seen: dict[str, str] = {}
        for t in specs:
            for c in t.features:
                if c in seen or c in spine_cols:
                    raise ConfigError(
                        t.name,
                        c,
                        f"feature name also in {seen.get(c, 'the spine')}",
                        "rename one of them before ingest",
                    )
                seen[c] = t.name
        # the time column as a timestamp, the spine's columns in their own order
        con.execute(
            f'CREATE VIEW spine_view AS SELECT * REPLACE (CAST("{time_col}" AS TIMESTAMP) AS "{time_col}") '
            "FROM spine_src"
        )
        spine_cols = [r[0] for r in con.execute("DESCRIBE spine_view").fetchall()]
        sql = training_set_sql("spine_view", spine_cols, specs, time_col)
        if out is not None:
            fmt = "csv, HEADER" if str(out).endswith(".csv") else "parquet"
            con.execute(f"COPY ({sql}) TO '{out}' (FORMAT {fmt})")
            return con.sql(f"SELECT * FROM {relation_sql(out)}").to_arrow_table()
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
