"""Row for row against Feast's point-in-time join (DuckDB offline store, local provider,
``filter_by_created_timestamp=True`` with ``available_at`` as the created timestamp): the same semantics,
so the same answers."""

from __future__ import annotations

import datetime as dt
import random
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from failsoft.features import FeatureStore, build_training_set

T0 = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def tables(
    seed: int = 11, users: int = 40, rows: int = 600, spine: int = 300
) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    feats = []
    for _ in range(rows):
        event = T0 + dt.timedelta(hours=rng.randint(0, 24 * 20))
        late = dt.timedelta(hours=rng.choice([0, 1, 2, 5, 30, 200]))  # some land much later: corrections
        feats.append({"user": rng.randint(0, users - 1), "event_time": event, "available_at": event + late,
                      "spend": round(rng.uniform(0, 100), 3)})  # fmt: skip
    # equal (user, event_time, available_at) make "the" value ambiguous in any store: keep the first
    seen, unique = set(), []
    for r in feats:
        key = (r["user"], r["event_time"], r["available_at"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    entity = []
    for i in range(spine):
        at = T0 + dt.timedelta(hours=rng.randint(0, 24 * 25))
        entity.append({"user": rng.randint(0, users), "row": i, "prediction_time": at})
    return unique, entity


def feast_join(tmp: Path, feats: list[dict], spine: list[dict], ttl: dt.timedelta) -> list[float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Feast's own deprecation notices are not ours to fail on
        import pandas as pd
        from feast import Entity, FeatureView, Field, FileSource, RepoConfig
        from feast import FeatureStore as Feast
        from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
        from feast.types import Float64
        from feast.value_type import ValueType

        pq.write_table(pa.Table.from_pylist(feats), tmp / "feats.parquet")
        config = RepoConfig(project="oracle", registry=str(tmp / "registry.db"), provider="local",
                            offline_store=DuckDBOfflineStoreConfig(),
                            online_store=SqliteOnlineStoreConfig(path=str(tmp / "online.db")),
                            entity_key_serialization_version=3)  # fmt: skip
        store = Feast(config=config)
        user = Entity(name="user", join_keys=["user"], value_type=ValueType.INT64)
        source = FileSource(path=str(tmp / "feats.parquet"), timestamp_field="event_time",
                            created_timestamp_column="available_at")  # fmt: skip
        schema = [Field(name="spend", dtype=Float64)]
        view = FeatureView(name="activity", entities=[user], ttl=ttl, schema=schema, source=source)
        store.apply([user, view])
        entity_df = pd.DataFrame(spine).rename(columns={"prediction_time": "event_timestamp"})
        out = store.get_historical_features(entity_df=entity_df, features=["activity:spend"],
                                            filter_by_created_timestamp=True).to_df()  # fmt: skip
    by_row = {
        int(r): (None if pd.isna(v) else float(v)) for r, v in zip(out["row"], out["spend"], strict=True)
    }
    return [by_row[s["row"]] for s in spine]


def test_same_answers_as_feast(tmp_path: Path) -> None:
    feats, spine = tables()
    ttl = dt.timedelta(days=3)
    store = FeatureStore(tmp_path / "fs")
    store.ingest("activity", pa.Table.from_pylist(feats), entity=["user"], ttl_s=ttl.total_seconds())
    ours = build_training_set(store, pa.Table.from_pylist(spine), ["activity"]).column("spend").to_pylist()
    theirs = feast_join(tmp_path, feats, spine, ttl)
    assert sum(v is not None for v in ours) > len(spine) // 3, "the comparison has values to compare"
    assert ours == theirs
