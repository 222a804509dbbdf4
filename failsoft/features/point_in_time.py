"""Point-in-time training sets: each spine row gets, per feature table, the value that was really there at
its ``prediction_time``.

Per spine row and table: among rows with ``available_at <= prediction_time`` and ``event_time <=
prediction_time``, the one with the greatest ``event_time`` (ties: the latest ``available_at``); none when
it is older than the table's TTL (``prediction_time - event_time > ttl``). One output row per spine row,
in spine order, nulls where nothing qualifies. Joining on ``event_time`` alone would hand a model values
that only landed after the prediction (late corrections, a field cleared after the outcome): label leakage.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from failsoft.errors import ConfigError
from failsoft.features.store import FeatureDataWarning, FeatureStore, connect, register, relation_sql

# The spine's prediction time as a plain UTC timestamp, for the joins; the spine's own column goes out as
# it came in (a zone-aware time stays zone-aware).
AT = "__at"


def training_set_sql(spine: str, spine_cols: list[str], tables: list[Any], time_col: str = AT) -> str:
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
    specs = [store.table(name) for name in tables]
    con = connect()
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
        con.execute(
            f'CREATE VIEW spine_view AS SELECT *, CAST("{time_col}" AS TIMESTAMP) AS {AT} FROM spine_src'
        )
        for warning in _empty_joins(con, specs, time_col):
            warnings.warn(warning, FeatureDataWarning, stacklevel=2)
        sql = training_set_sql("spine_view", spine_cols, specs)
        if out is not None:
            fmt = "csv, HEADER" if str(out).endswith(".csv") else "parquet"
            con.execute(f"COPY ({sql}) TO '{out}' (FORMAT {fmt})")
            return con.sql(f"SELECT * FROM {relation_sql(out)}").to_arrow_table()
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _empty_joins(con: Any, specs: list[Any], time_col: str) -> list[str]:
    """A table none of whose values had landed by any of the spine's prediction times: the training set
    gets nothing from it, usually because its rows were stamped as landed at ingest, today."""
    said = []
    [(n, latest)] = con.execute(f"SELECT count(*), max({AT}) FROM spine_view").fetchall()
    for t in specs:
        [(first,)] = con.execute(f"SELECT min(available_at) FROM read_parquet('{t.glob}')").fetchall()
        if not n or first is None:
            continue
        [(before,)] = con.execute(f"SELECT count(*) FROM spine_view WHERE {AT} < ?", [first]).fetchall()
        if before < n:
            continue
        said.append(
            f"table {t.name}: its first value landed at {first:%Y-%m-%d %H:%M} UTC, after every spine "
            f"row's {time_col} (the latest is {latest:%Y-%m-%d %H:%M} UTC): the training set has none of its "
            "features. If its rows were stamped at ingest (the source had no available_at column), ingest "
            "again naming the column that says when each row landed (--available-at-column)"
        )
    return said
