"""Point-in-time training sets at scale: N feature rows x M spine rows (default 10M x 1M), timed, with the
peak memory of the process. The last line printed is one JSON object.

    python bench/point_in_time.py [--rows 10000000] [--spine 1000000] [--entities 1000000] [--feast]

With ``--feast`` (pip install 'feast[duckdb]'), Feast's DuckDB offline store does the same join in a
process of its own (its time and peak memory measured there) and the two results are compared row by row.

The rows are generated with DuckDB: per entity, events over 90 days, each landing 0-48 h after it
happened (some much later: corrections), a TTL of 30 days.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from failsoft.features import FeatureStore


def generate(work: Path, rows: int, spine: int, entities: int) -> tuple[Path, Path]:
    con = duckdb.connect()
    feats, spine_path = work / "feats.parquet", work / "spine.parquet"
    con.execute(f"""COPY (
        SELECT (hash(i) % {entities})::BIGINT AS user,
               TIMESTAMP '2026-01-01' + to_seconds((hash(i * 7) % (90 * 86400))::BIGINT) AS event_time,
               event_time + to_seconds(CASE WHEN hash(i * 13) % 20 = 0
                                            THEN (hash(i * 17) % (30 * 86400))::BIGINT
                                            ELSE (hash(i * 19) % (48 * 3600))::BIGINT END) AS available_at,
               (hash(i * 23) % 1000)::DOUBLE / 10 AS spend,
               (hash(i * 29) % 50)::INTEGER AS sessions
        FROM range({rows}) t(i)) TO '{feats}' (FORMAT parquet)""")
    con.execute(f"""COPY (
        SELECT (hash(j * 31) % {entities})::BIGINT AS user,
               TIMESTAMP '2026-01-15' + to_seconds((hash(j * 37) % (80 * 86400))::BIGINT) AS prediction_time,
               (hash(j * 41) % 2)::INTEGER AS label, j AS row
        FROM range({spine}) t(j)) TO '{spine_path}' (FORMAT parquet)""")
    con.close()
    return feats, spine_path


FEAST = """
import resource, sys, time, warnings
warnings.simplefilter("ignore")
import pandas as pd
from datetime import timedelta
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.infra.offline_stores.duckdb import DuckDBOfflineStoreConfig
from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
from feast.types import Float64, Int32
from feast.value_type import ValueType
work = sys.argv[1]
config = RepoConfig(project="bench", registry=f"{work}/registry.db", provider="local",
                    offline_store=DuckDBOfflineStoreConfig(),
                    online_store=SqliteOnlineStoreConfig(path=f"{work}/online.db"),
                    entity_key_serialization_version=3)
store = FeatureStore(config=config)
user = Entity(name="user", join_keys=["user"], value_type=ValueType.INT64)
source = FileSource(path=f"{work}/feats.parquet", timestamp_field="event_time",
                    created_timestamp_column="available_at")
view = FeatureView(name="activity", entities=[user], ttl=timedelta(days=30), source=source,
                   schema=[Field(name="spend", dtype=Float64), Field(name="sessions", dtype=Int32)])
store.apply([user, view])
spine = pd.read_parquet(f"{work}/spine.parquet").rename(columns={"prediction_time": "event_timestamp"})
t = time.perf_counter()
out = store.get_historical_features(entity_df=spine, features=["activity:spend", "activity:sessions"],
                                    filter_by_created_timestamp=True).to_df()
took = time.perf_counter() - t
out.to_parquet(f"{work}/feast.parquet")
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

BUILD = """
import resource, sys, time
import pyarrow.parquet as pq
from failsoft.features import FeatureStore, build_training_set
work = sys.argv[1]
t = time.perf_counter()
table = build_training_set(FeatureStore(f"{work}/fs"), f"{work}/spine.parquet", ["activity"])
took = time.perf_counter() - t
pq.write_table(table, f"{work}/train.parquet")
filled = table.num_rows - table.column("spend").null_count
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, table.num_rows, filled)
"""


def compare(work: Path) -> int:
    """Spine rows where failsoft and Feast disagree (spend or sessions)."""
    con = duckdb.connect()
    n = con.execute(f"""
        WITH a AS (SELECT row, spend, sessions FROM read_parquet('{work / "train.parquet"}')),
             b AS (SELECT row, spend, sessions FROM read_parquet('{work / "feast.parquet"}'))
        SELECT count(*) FROM a FULL JOIN b USING (row)
        WHERE a.spend IS DISTINCT FROM b.spend OR a.sessions IS DISTINCT FROM b.sessions""").fetchone()[0]
    con.close()
    return int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--spine", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--feast", action="store_true", help="run Feast's DuckDB offline store on the same data")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-pit-"))
    try:
        t = time.perf_counter()
        feats, _ = generate(work, args.rows, args.spine, args.entities)
        print(f"generated in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        store = FeatureStore(work / "fs")
        t = time.perf_counter()
        store.ingest("activity", feats, entity=["user"], ttl_s=30 * 86400)
        ingest_s = time.perf_counter() - t
        # In a process of its own, as Feast's is, so the peak memory is the build's alone; in memory, as
        # Feast's to_df() is, written out afterwards for the comparison.
        import subprocess

        done = subprocess.run([sys.executable, "-c", BUILD, str(work)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"build failed: {done.stderr[-2000:]}")
        build_s, peak_mb, rows_out, filled = (float(x) for x in done.stdout.split()[-4:])
        print(
            f"built {rows_out:.0f} rows ({filled:.0f} with a value) in {build_s:.1f} s, "
            f"peak {peak_mb:.0f} MB",
            file=sys.stderr,
        )
        result = {"feature_rows": args.rows, "spine_rows": args.spine, "ingest_s": round(ingest_s, 2),
                  "build_s": round(build_s, 2), "peak_rss_mb": round(peak_mb), "rows_out": int(rows_out),
                  "rows_with_value": int(filled)}  # fmt: skip
        if args.feast:
            done = subprocess.run([sys.executable, "-c", FEAST, str(work)], capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"feast failed: {done.stderr[-2000:]}")
            feast_s, feast_mb = (float(x) for x in done.stdout.split()[-2:])
            result.update(feast_s=round(feast_s, 2), feast_peak_rss_mb=round(feast_mb),
                          time_ratio=round(build_s / feast_s, 3), mismatched_rows=compare(work))  # fmt: skip
            n = result["mismatched_rows"]
            print(f"feast: {feast_s:.1f} s, peak {feast_mb:.0f} MB; rows differing: {n}", file=sys.stderr)
        print(json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
