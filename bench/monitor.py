"""What the online monitor costs live traffic: failsoft serving one model with monitoring off, side by
side with the same model monitored (a reference profile of its 30 inputs and its predictions, windows of
5,000 requests judged in the background: PSI, KS, Holm, estimated performance), in one run. Monitored means
the defaults: past 1,000 rows a second a random sample of the requests goes into the windows. ``--keep-all``
adds a third configuration that keeps every request (``max_rows_per_s = 0``), to show what sampling saves.

Same model and server as bench/overhead.py (logistic regression on scikit-learn's bundled breast-cancer
set, compiled at load, every answer logged). wrk sends rows drawn at random from the data set (a monitor fed
one repeated row would only see drift), over loopback at concurrency 32; the two configurations alternate
for ``--rounds`` rounds (which goes first alternates too). This machine's throughput wanders by 10-20%
between runs, so the ratio is taken per round (the two runs of a round are back to back) and its median
reported beside the ratio of the medians. Each run also reports the gateway's CPU time per request
(its process and its log writer, from /proc), which wanders far less than requests a second. The last line
printed is one JSON object.

    python bench/monitor.py [--seconds 5] [--rounds 3] [--keep-all]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from overhead import compare, portfolio, served, wrk, wrk_cpu
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from failsoft.monitor.profile import Column, build

MONITOR = """
[models.m.monitor]
profile = "{profile}"
"""


def write_profile(work: Path, data: Any, model: Any, names: list[str]) -> Path:
    """The reference profile of the data set's 30 inputs and the model's predictions (with calibration)."""
    cols = {n: Column(n, "numeric", data.data[:, i]) for i, n in enumerate(names)}
    cols["score"] = Column("score", "numeric", model.predict_proba(data.data)[:, 1])
    cols["y"] = Column("y", "numeric", data.target.astype(np.float64))
    path = work / "profile.json"
    build(cols, names, score="score", target="y").save(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep-all", action="store_true", help="also monitor every request (no sampling)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/monitor.py needs wrk (Debian/Ubuntu: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="failsoft-bench-monitor-"))
    data = load_breast_cancer()
    names = [f"f{i}" for i in range(data.data.shape[1])]
    model = LogisticRegression(max_iter=10000).fit(data.data, data.target)
    joblib.dump(model, work / "model.joblib")
    profile = write_profile(work, data, model, names)
    rng = random.Random(0)
    rows = [data.data[rng.randrange(len(data.data))] for _ in range(500)]
    bodies = [json.dumps({"inputs": dict(zip(names, r.tolist(), strict=True))}) for r in rows]
    off = portfolio(work, "", names)
    on = work / "monitored.toml"
    on.write_text(off.read_text() + MONITOR.format(profile=profile))
    configs = [("off", off), ("monitored", on)]
    if args.keep_all:
        every = work / "every-request.toml"
        every.write_text(on.read_text() + "max_rows_per_s = 0\n")
        configs.append(("every_request", every))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
    try:
        for r in range(args.rounds):
            for name, cfg in configs if r % 2 == 0 else configs[::-1]:
                with served(cfg) as gw:
                    url = gw.url + "/v1/models/m/predict"
                    wrk(url, bodies, 8, 2)  # warm up
                    point: dict[str, Any] = wrk_cpu(gw, url, bodies, 32, args.seconds)
                    extra = ""
                    if name != "off":
                        with urllib.request.urlopen(gw.url + "/v1/models/m/monitor") as resp:
                            doc = json.loads(resp.read())
                        point |= {"windows": doc["windows_judged"], "verdicts": doc["verdicts"],
                                  "dropped": doc["dropped"], "kept_share": doc["kept_share"],
                                  "health": doc["health"]}  # fmt: skip
                        extra = f" windows {point['windows']} {point['verdicts']} kept {point['kept_share']}"
                    results[name].append(point)
                    print(f"round {r + 1} {name:13s} {point['rps']:>9.1f} req/s p99 {point['p99_ms']:.3f} ms"
                          f" cpu {point['cpu_us']:.1f} us/req non-2xx {point['non_2xx']}{extra}",
                          file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = compare({k: results[k] for k in ("off", "monitored")}, "off", "monitored")
    if args.keep_all:
        out["every_request"] = {
            k: v
            for k, v in compare(
                {k: results[k] for k in ("off", "every_request")}, "off", "every_request"
            ).items()
            if k != "rounds"
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
