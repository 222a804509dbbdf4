"""The online side of the feature store: the latest available value per entity, held in memory for the
request path, and the feature latency of every table.

A model that declares ``[[models.NAME.features]]`` gets its rows filled from these lookups before they are
validated. When an entity's newest value is older than the use's ``max_age_s`` (or the entity has none),
the model's primary tier is skipped with reason ``stale_features`` and the row goes down the chain; a
tier that answers from request fields alone, or the safe default, still answers.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from failsoft.features.store import FeatureStore, connect

__all__ = ["FeatureLookup", "OnlineTable", "fill"]


class OnlineTable:
    """One feature table's newest available row per entity (greatest ``event_time``, ties: the latest
    ``available_at``), among rows with ``available_at <= now``. ``load`` blocks (run it off the loop);
    ``due`` says whether new files landed or held-back rows became available since the last load."""

    def __init__(self, store: FeatureStore, name: str, now: Callable[[], float] = time.time) -> None:
        self.store = store
        self.table = store.table(name)
        self.name = name
        self.now = now
        self.columns: tuple[str, ...] = tuple(self.table.features)
        self.values: dict[Any, tuple[float, tuple[Any, ...]]] = {}
        self.lag: dict[str, Any] = {}
        self.loaded_at: float | None = None
        self._signature: tuple[tuple[str, int, int], ...] = ()
        self._next_landing: float | None = None

    def _files(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for p in sorted(self.table.path.glob("*.parquet")):
            st = p.stat()
            out.append((p.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def due(self) -> bool:
        if self._files() != self._signature:
            return True
        return self._next_landing is not None and self._next_landing <= self.now()

    def load(self) -> None:
        files, now = self._files(), self.now()
        t = self.store.table(self.name)
        keys = ", ".join(f'"{k}"' for k in t.entity)
        feats = ", ".join(f'"{c}"' for c in t.features)
        values: dict[Any, tuple[float, tuple[Any, ...]]] = {}
        next_landing = None
        if files:
            con = connect()
            try:
                src = f"read_parquet('{t.glob}')"
                got = con.sql(f"""
                    SELECT {keys}, epoch(event_time), {feats} FROM (
                        SELECT *, row_number() OVER (PARTITION BY {keys}
                                                     ORDER BY event_time DESC, available_at DESC) AS __rank
                        FROM {src} WHERE epoch(available_at) <= {now}) WHERE __rank = 1""").to_arrow_table()
                cols = [c.to_pylist() for c in got.columns]
                n_keys = len(t.entity)
                key_cols = cols[0] if n_keys == 1 else list(zip(*cols[:n_keys], strict=True))
                rows = zip(*cols[n_keys + 1 :], strict=True) if t.features else itertools.repeat(())
                values = {k: (e, v) for k, e, v in zip(key_cols, cols[n_keys], rows, strict=False)}
                row = con.execute(
                    f"SELECT min(epoch(available_at)) FROM {src} WHERE epoch(available_at) > {now}"
                ).fetchone()
                next_landing = None if row is None or row[0] is None else float(row[0])
            finally:
                con.close()
        self.lag = self.store.lag(self.name, now=now) if files else {"table": self.name, "rows": 0}
        self.table, self.columns, self.values = t, tuple(t.features), values
        self._signature, self._next_landing, self.loaded_at = files, next_landing, now

    def newest_age_s(self) -> float | None:
        """Seconds since the newest value of the table landed: a feature pipeline that stopped shows here."""
        newest = self.lag.get("newest_available_at")
        return None if newest is None else self.now() - newest


class FeatureLookup:
    """One model's use of one online table: which columns, keyed by which request fields, how old a value
    may be."""

    __slots__ = ("columns", "entity", "index", "max_age_s", "online")

    def __init__(self, online: OnlineTable, columns: list[str] | None, max_age_s: float | None) -> None:
        self.online = online
        self.entity = tuple(online.table.entity)
        self.columns = tuple(columns or online.columns)
        self.index = tuple(online.columns.index(c) for c in self.columns)
        self.max_age_s = max_age_s


def fill(lookups: tuple[FeatureLookup, ...], rows: list[Any], now: float) -> tuple[list[Any], str | None]:
    """The rows with their looked-up feature values added (a value the request gives itself wins), and why
    they are stale, if any is: the first entity without a value or with one older than allowed."""
    stale: str | None = None
    out: list[Any] = []
    for row in rows:
        if type(row) is not dict:
            out.append(row)  # validation names the problem
            continue
        filled = dict(row)
        for use in lookups:
            entity = use.entity
            key = row.get(entity[0]) if len(entity) == 1 else tuple(row.get(k) for k in entity)
            hit = use.online.values.get(key) if key is not None else None
            if hit is None:
                if stale is None:
                    stale = f"{use.online.name}: no values for {'/'.join(entity)}={key!r:.40}"
                continue
            event_time, values = hit
            if use.max_age_s is not None and now - event_time > use.max_age_s and stale is None:
                stale = (
                    f"{use.online.name}: values for {'/'.join(entity)}={key!r:.40} are "
                    f"{now - event_time:.0f} s old (max {use.max_age_s:g} s)"
                )
            for c, i in zip(use.columns, use.index, strict=True):
                if c not in row:
                    filled[c] = values[i]
        out.append(filled)
    return out, stale
