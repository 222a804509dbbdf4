"""What mirroring costs live traffic: failsoft with no shadows, side by side with failsoft copying every
request to two shadow candidates (sample = 1.0), in one run.

Same model and server as bench/overhead.py (logistic regression on scikit-learn's bundled breast-cancer
set, 30 floats a row, compiled at load, deadline 50 ms, every answer logged); the two candidates are the
same model loaded twice more, so their answers are logged too (three log rows per request instead of one).
Load from wrk over loopback at concurrency 32, the two configurations alternated for ``--rounds`` rounds
(which goes first alternates too). After each shadowed run, with the gateway stopped, the store is read:
the copies mirrored and dropped (the gateway's saved counters) and the shadow answers logged, which equal
the copies mirrored when none was lost. This machine's throughput wanders by 10-20% between
runs, so the ratio is also taken per round and its median reported beside the ratio of the medians. The
last line printed is one JSON object with the medians and the ratios (shadows / none).

    python bench/shadow.py [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import joblib
from overhead import compare, portfolio, served, wrk, wrk_cpu
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

CANDIDATES = """
[[models.m.candidates]]
name = "{name}"
kind = "python"
path = "{path}"
sample = 1.0
max_concurrency = 64
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-log", action="store_true", help="prediction logging off on both sides")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/shadow.py needs wrk (Debian/Ubuntu: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-shadow-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    joblib.dump(LogisticRegression(max_iter=10000).fit(data.data, data.target), work / "model.joblib")
    body = json.dumps({"inputs": dict(zip(names, data.data[0].tolist(), strict=True))})
    plain = portfolio(work, "", names, "[store]\nlog_predictions = false" if args.no_log else "")
    shadowed = work / "shadowed.toml"
    shadowed.write_text(
        plain.read_text()
        + "".join(CANDIDATES.format(name=n, path=work / "model.joblib") for n in ("cand-a", "cand-b"))
    )
    results: dict[str, list[dict[str, Any]]] = {"none": [], "two_candidates": []}
    db = work / "state" / "failsoft.db"
    try:
        for r in range(args.rounds):
            pair = (("none", plain), ("two_candidates", shadowed))
            for name, cfg in pair if r % 2 == 0 else pair[::-1]:
                logged, before = shadow_rows(db), copies(db)
                with served(cfg) as gw:
                    url = gw.url + "/v1/models/m/predict"
                    wrk(url, body, 8, 2)  # warm up
                    point: dict[str, Any] = wrk_cpu(gw, url, body, 32, args.seconds)
                # The gateway has stopped: it saved its copy counters and wrote out its log, so every copy
                # mirrored (warm-up included) has its answer there.
                if name == "two_candidates":
                    point.update({k: n - before[k] for k, n in copies(db).items()})
                    if not args.no_log:
                        point["shadow_rows_logged"] = shadow_rows(db) - logged
                results[name].append(point)
                line = f"round {r + 1} {name:15s} {point['rps']:>9.1f} req/s p99 {point['p99_ms']:.3f} ms"
                extra = "".join(f" {k} {point[k]}" for k in ("mirrored", "dropped", "shadow_rows_logged")
                                if k in point)  # fmt: skip
                print(f"{line}  non-2xx {point['non_2xx']}{extra}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(compare(results, "none", "two_candidates")))


def copies(db: Path) -> dict[str, int]:
    """Copies mirrored and dropped by every run so far (each run is a replica of its own)."""
    if not db.exists():
        return {"mirrored": 0, "dropped": 0}
    with contextlib.closing(sqlite3.connect(db)) as conn:
        sql = "SELECT coalesce(sum(mirrored), 0), coalesce(sum(dropped), 0) FROM shadow_counters"
        mirrored, dropped = conn.execute(sql).fetchone()
    return {"mirrored": int(mirrored), "dropped": int(dropped)}


def shadow_rows(db: Path) -> int:
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM shadow_predictions").fetchone()[0])


if __name__ == "__main__":
    main()
