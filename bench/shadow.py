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

``--against DIR`` runs an earlier build too (DIR: its source tree, e.g. from ``git worktree add DIR
REV``, with whatever it imports installed here), both configurations of it in the same rounds, each build
on a state folder of its own. A ratio depends on what the rest of a request costs: a leaner request path
makes the same shadows a larger share. So the last line then also has each build's ratios and what
shadows add to the CPU of a request (gateway and log writer, microseconds, median of the rounds' pairs).

    python bench/shadow.py [--seconds 5] [--rounds 3] [--against DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sqlite3
import statistics
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
    ap.add_argument("--against", type=Path, metavar="DIR", help="an earlier build's source tree, run alike")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/shadow.py needs wrk (Debian/Ubuntu: apt-get install wrk)")
    if args.against is not None and not (args.against / "failsoft" / "cli.py").is_file():
        raise SystemExit(f"--against {args.against}: no failsoft source tree there (failsoft/cli.py)")
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-shadow-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    model = LogisticRegression(max_iter=10000).fit(data.data, data.target)
    body = json.dumps({"inputs": dict(zip(names, data.data[0].tolist(), strict=True))})
    store = "[store]\nlog_predictions = false" if args.no_log else ""
    # (name, config, source tree or None for this one, its database); each build has a state folder
    runs: list[tuple[str, Path, Path | None, Path]] = []
    for prefix, checkout in [("", None), *([("against_", args.against)] if args.against else [])]:
        folder = work / (prefix or "this")
        folder.mkdir()
        joblib.dump(model, folder / "model.joblib")
        plain = portfolio(folder, "", names, store)
        shadowed = folder / "shadowed.toml"
        shadowed.write_text(
            plain.read_text()
            + "".join(CANDIDATES.format(name=n, path=folder / "model.joblib") for n in ("cand-a", "cand-b"))
        )
        db = folder / "state" / "failsoft.db"
        runs += [(prefix + "none", plain, checkout, db), (prefix + "two_candidates", shadowed, checkout, db)]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in runs}
    try:
        for r in range(args.rounds):
            for name, cfg, checkout, db in runs if r % 2 == 0 else runs[::-1]:
                logged, before = shadow_rows(db), copies(db)
                with served(cfg, checkout) as gw:
                    url = gw.url + "/v1/models/m/predict"
                    wrk(url, body, 8, 2)  # warm up
                    point: dict[str, Any] = wrk_cpu(gw, url, body, 32, args.seconds)
                # The gateway has stopped: it saved its copy counters and wrote out its log, so every copy
                # mirrored (warm-up included) has its answer there.
                if name.endswith("two_candidates"):
                    point.update({k: n - before[k] for k, n in copies(db).items()})
                    if not args.no_log:
                        point["shadow_rows_logged"] = shadow_rows(db) - logged
                results[name].append(point)
                line = f"round {r + 1} {name:23s} {point['rps']:>9.1f} req/s p99 {point['p99_ms']:.3f} ms"
                extra = "".join(f" {k} {point[k]}" for k in ("mirrored", "dropped", "shadow_rows_logged")
                                if k in point)  # fmt: skip
                print(f"{line}  non-2xx {point['non_2xx']}{extra}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.against is None:
        print(json.dumps(compare(results, "none", "two_candidates")))
        return
    both = {}
    for build, prefix in (("this", ""), ("against", "against_")):
        pairs = list(zip(results[prefix + "two_candidates"], results[prefix + "none"], strict=True))
        both[build] = {
            **compare({k: results[prefix + k] for k in ("none", "two_candidates")}, "none", "two_candidates"),
            "shadows_add_cpu_us": round(statistics.median(o["cpu_us"] - b["cpu_us"] for o, b in pairs), 2),
        }
    print(json.dumps(both))


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
