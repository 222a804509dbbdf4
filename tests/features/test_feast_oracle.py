"""Row for row against Feast's point-in-time join (DuckDB offline store, local provider,
``filter_by_created_timestamp=True`` with ``available_at`` as the created timestamp): the same semantics,
so the same answers."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from failsoft.cli import main
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


def feast_join(
    tmp: Path,
    feats: list[dict],
    spine: list[dict],
    ttl: dt.timedelta,
    event: str = "event_time",
    created: str = "available_at",
) -> list[float | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Feast's own deprecation notices are not ours to fail on
        import pandas as pd
        from feast import Entity, FeatureView, Field, FileSource, RepoConfig
        from feast import FeatureStore as Feast
        from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
        from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
        from feast.types import Float64
        from feast.value_type import ValueType

        renamed = [{event if k == "event_time" else created if k == "available_at" else k: v
                    for k, v in r.items()} for r in feats]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(renamed), tmp / "feats.parquet")
        config = RepoConfig(project="oracle", registry=str(tmp / "registry.db"), provider="local",
                            offline_store=DuckDBOfflineStoreConfig(),
                            online_store=SqliteOnlineStoreConfig(path=str(tmp / "online.db")),
                            entity_key_serialization_version=3)  # fmt: skip
        store = Feast(config=config)
        user = Entity(name="user", join_keys=["user"], value_type=ValueType.INT64)
        source = FileSource(path=str(tmp / "feats.parquet"), timestamp_field=event,
                            created_timestamp_column=created)  # fmt: skip
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


FEAST_COLUMNS = ["--event-time-column", "event_timestamp", "--available-at-column", "created"]
REPO = """
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
from feast.value_type import ValueType

user = Entity(name="user", join_keys=["user"], value_type=ValueType.INT64)
source = FileSource(path="data/activity.parquet", timestamp_field="event_timestamp",
                    created_timestamp_column="created")
activity = FeatureView(name="activity", entities=[user], ttl=timedelta(days=3),
                       schema=[Field(name="spend", dtype=Float64)], source=source)
"""


def feast_style(tmp: Path) -> tuple[Path, list[dict], list[dict], list[float | None]]:
    """Feast's column names (event_timestamp, created) in the feature file and the spine, and Feast's
    answers on them."""
    feats, spine = tables()
    theirs = feast_join(tmp, feats, spine, dt.timedelta(days=3), "event_timestamp", "created")
    spine_file = tmp / "spine.parquet"
    pq.write_table(
        pa.Table.from_pylist([{**{k: v for k, v in s.items() if k != "prediction_time"},
                               "event_timestamp": s["prediction_time"]} for s in spine]),
        spine_file,
    )  # fmt: skip
    return spine_file, feats, spine, theirs


def ours_by_cli(tmp: Path, spine_file: Path, spine: list[dict], *ingest: str) -> list[float | None]:
    root = str(tmp / "fs")
    assert main(["features", "ingest", "--root", root, "--quiet", *ingest]) == 0
    out = tmp / "train.parquet"
    build = ["--spine", str(spine_file), "--table", "activity", "--out", str(out)]
    assert main(["features", "build", "--root", root, "--quiet", "--spine-time-column", "event_timestamp",
                 *build]) == 0  # fmt: skip
    got = pq.read_table(out)
    assert got.column("event_timestamp").to_pylist() == [s["prediction_time"] for s in spine], "UTC kept"
    return got.column("spend").to_pylist()


def test_feast_style_file_through_the_command_line(tmp_path: Path) -> None:
    spine_file, _, spine, theirs = feast_style(tmp_path)
    source = ["--name", "activity", "--source", str(tmp_path / "feats.parquet"), "--entity", "user",
              "--ttl", "3d", *FEAST_COLUMNS]  # fmt: skip
    ours = ours_by_cli(tmp_path, spine_file, spine, *source)
    assert sum(v is not None for v in ours) > len(spine) // 3
    assert ours == theirs


def test_feast_repository_read_directly(tmp_path: Path) -> None:
    spine_file, _, spine, theirs = feast_style(tmp_path)
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (tmp_path / "feats.parquet").rename(repo / "data" / "activity.parquet")
    (repo / "feature_store.yaml").write_text("project: churn\nregistry: registry.db\nprovider: local\n")
    (repo / "definitions.py").write_text(REPO)
    assert ours_by_cli(tmp_path, spine_file, spine, "--feast-repo", str(repo)) == theirs


def test_a_landing_column_under_another_name_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spine_file, *_ = feast_style(tmp_path)
    root = str(tmp_path / "fs")
    source = ["--name", "activity", "--source", str(tmp_path / "feats.parquet"), "--entity", "user"]
    assert main(["features", "ingest", "--root", root, "--quiet", *source]) == 2  # no event_time
    assert "--event-time-column event_timestamp" in capsys.readouterr().err
    ingest = [
        "features",
        "ingest",
        "--root",
        root,
        "--quiet",
        *source,
        "--event-time-column",
        "event_timestamp",
    ]
    assert main(ingest) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "--available-at-column created" in err
    build = ["features", "build", "--root", root, "--quiet", "--spine", str(spine_file), "--table",
             "activity", "--out", str(tmp_path / "t.parquet"),
             "--spine-time-column", "event_timestamp"]  # fmt: skip
    assert main(build) == 0
    err = capsys.readouterr().err
    assert "after every spine row's event_timestamp" in err and "the training set has none of its" in err


def test_utc_times_survive_a_host_in_another_zone(tmp_path: Path) -> None:
    """The same build on a host set to Tokyo: the spine's UTC times come back in UTC, the values alike."""
    spine_file, _, spine, theirs = feast_style(tmp_path)
    script = (
        "import sys, pyarrow.parquet as pq; from failsoft.cli import main; "
        "r = main(['features', 'ingest', '--root', sys.argv[1], '--quiet', '--name', 'activity', '--source', "
        "sys.argv[2], '--entity', 'user', '--ttl', '3d', '--event-time-column', 'event_timestamp', "
        "'--available-at-column', 'created']); "
        "r = r or main(['features', 'build', '--root', sys.argv[1], '--quiet', '--spine', sys.argv[3], "
        "'--table', 'activity', '--out', sys.argv[4], '--spine-time-column', 'event_timestamp']); sys.exit(r)"
    )
    out = tmp_path / "tokyo.parquet"
    env = {**os.environ, "TZ": "Asia/Tokyo"}
    args = [str(tmp_path / "fs"), str(tmp_path / "feats.parquet"), str(spine_file), str(out)]
    subprocess.run([sys.executable, "-c", script, *args], env=env, check=True, timeout=120)
    got = pq.read_table(out)
    assert str(got.schema.field("event_timestamp").type) == "timestamp[us, tz=UTC]"
    assert got.column("event_timestamp").to_pylist() == [s["prediction_time"] for s in spine]
    assert got.column("spend").to_pylist() == theirs
