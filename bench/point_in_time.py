"""Point-in-time training sets at scale: N feature rows x M spine rows (default 10M x 1M), timed, with the
peak memory of the process. The last line printed is one JSON object.

    python bench/point_in_time.py [--rows 10000000] [--spine 1000000] [--entities 1000000]

The rows are generated with DuckDB: per entity, events over 90 days, each landing 0-48 h after it
happened (some much later: corrections), a TTL of 30 days.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from failsoft.features import FeatureStore, build_training_set


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
               (hash(j * 41) % 2)::INTEGER AS label
        FROM range({spine}) t(j)) TO '{spine_path}' (FORMAT parquet)""")
    con.close()
    return feats, spine_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--spine", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-pit-"))
    try:
        t = time.perf_counter()
        feats, spine = generate(work, args.rows, args.spine, args.entities)
        print(f"generated in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        store = FeatureStore(work / "fs")
        t = time.perf_counter()
        store.ingest("activity", feats, entity=["user"], ttl_s=30 * 86400)
        ingest_s = time.perf_counter() - t
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        table = build_training_set(store, spine, ["activity"], out=work / "train.parquet")
        build_s = time.perf_counter() - t
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        filled = table.num_rows - table.column("spend").null_count
        print(
            f"built {table.num_rows} rows ({filled} with a value) in {build_s:.1f} s, peak {peak_mb:.0f} MB",
            file=sys.stderr,
        )
        print(
            json.dumps(
                {
                    "feature_rows": args.rows,
                    "spine_rows": args.spine,
                    "ingest_s": round(ingest_s, 2),
                    "build_s": round(build_s, 2),
                    "peak_rss_mb": round(peak_mb),
                    "rows_out": table.num_rows,
                    "rows_with_value": filled,
                    "rss_before_mb": round(before / 1024),
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
