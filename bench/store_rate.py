"""The shared limit of a fleet: how many prediction-log rows a second one PostgreSQL takes, written the
way replicas write them (batches of 1,000 rows, one INSERT a batch), from 1, 2 and 4 writers at once, on
this machine's PostgreSQL (127.0.0.1:5432, a fresh database). SQLite beside it (one writer: one file takes
one at a time). The last line is one JSON object.

    python bench/store_rate.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgspec
import psycopg

from failsoft.store import open_store

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BATCH = 1000


def batch(prefix: str, base: int) -> bytes:
    rows = [[None, f"{prefix}-{base + i}", "churn", "7", "cpu", "live", False, None, 0.42, None, 1.2,
             time.time()] for i in range(BATCH)]  # fmt: skip
    return msgspec.json.encode({"prefix": prefix, "base": base, "rows": rows})


def rate(url: str, writers: int, seconds: float) -> float:
    done = [0] * writers

    def write(k: int) -> None:
        store = open_store(url)
        store.connect()
        prefix, n = f"w{k}-{uuid.uuid4().hex[:6]}", 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            done[k] += store.insert_json(batch(prefix, n))
            n += BATCH
        store.close()

    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    t = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return round(sum(done) / (time.monotonic() - t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    name = f"failsoft_bench_rate_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    out: dict[str, float] = {}
    try:
        url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
        open_store(url).connect()  # the schema, once
        for writers in (1, 2, 4):
            out[f"postgres_rows_per_s_{writers}_writers"] = rate(url, writers, args.seconds)
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with tempfile.TemporaryDirectory() as tmp:
        out["sqlite_rows_per_s_1_writer"] = rate(f"sqlite:///{Path(tmp) / 'log.db'}", 1, args.seconds)
    for k, v in out.items():
        print(f"{k:>32}: {v:,.0f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
