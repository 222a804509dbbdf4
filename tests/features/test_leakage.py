"""The leakage audit on a generated churn table: it flags the Null that only appears after the outcome
(which a check that drops Nulls cannot see) and leaves the honest feature of the same table alone."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from sklearn.metrics import roc_auc_score

from failsoft.features import FeatureStore
from failsoft.features.leakage import audit

DAY = dt.timedelta(days=1)
T0 = dt.datetime(2026, 3, 1)


def churn_tables(n: int = 600, seed: int = 4) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A nightly snapshot of each account on day 95; for those who later cancel (on day 103), a correction
    of the day-99 snapshot lands on day 105 with last_login cleared. Predictions are made on day 100."""
    rng = random.Random(seed)
    rows, spine = [], []
    for user in range(n):
        churns = rng.random() < 0.3
        sessions = rng.gauss(20 - 3 * churns, 6)  # honest: a little lower for those who leave
        landed = T0 + 95 * DAY + dt.timedelta(hours=1)
        rows.append({"user": user, "event_time": T0 + 95 * DAY, "available_at": landed,
                     "last_login": float(rng.randint(0, 30)), "sessions": sessions})  # fmt: skip
        if churns:
            rows.append({"user": user, "event_time": T0 + 99 * DAY, "available_at": T0 + 105 * DAY,
                         "last_login": None, "sessions": sessions})  # fmt: skip
        split = "train" if user < n * 0.7 else "test"
        spine.append(
            {"user": user, "prediction_time": T0 + 100 * DAY, "churned": int(churns), "split": split}
        )
    return rows, spine


def test_an_honest_feature_with_latency_is_late_not_suspicious(tmp_path: Path) -> None:
    """Daily activity lands three hours after midnight; predictions are made at 01:00. A join on event_time
    would use today's not-yet-landed value, but yesterday's predicts the label just as well: late."""
    rng = random.Random(9)
    rows, spine = [], []
    for user in range(500):
        base = rng.gauss(0, 1)
        churns = rng.random() < 1 / (1 + np.exp(-2 * base))
        for day in range(90, 101):
            at = T0 + day * DAY
            rows.append({"user": user, "event_time": at, "available_at": at + dt.timedelta(hours=3),
                         "activity": base + rng.gauss(0, 0.3)})  # fmt: skip
        spine.append({"user": user, "prediction_time": T0 + 100 * DAY + dt.timedelta(hours=1),
                      "churned": int(churns)})  # fmt: skip
    store = FeatureStore(tmp_path)
    store.ingest("activity", pa.Table.from_pylist(rows), entity=["user"])
    report = audit(store, pa.Table.from_pylist(spine), ["activity"], label="churned")
    [f] = report["features"]
    assert f["verdict"] == "late", f
    assert f["would_leak_rate"] > 0.9 and f["latency_s"]["p50"] == 3 * 3600
    assert "latency p50 3h" in f["reason"] and "point-in-time join" in f["reason"]
    assert report["summary"] == {"ok": 0, "late": 1, "suspicious": 0, "leak": 0}


def test_flags_the_null_after_cancellation_and_not_the_honest_feature(tmp_path: Path) -> None:
    rows, spine = churn_tables()
    store = FeatureStore(tmp_path)
    store.ingest("account", pa.Table.from_pylist(rows), entity=["user"])
    report = audit(store, pa.Table.from_pylist(spine), ["account"], label="churned", split="split")
    verdicts = {f["feature"]: f for f in report["features"]}
    leak = verdicts["last_login"]
    assert leak["verdict"] == "leak" and "null indicator" in leak["reason"], leak
    assert leak["power"]["naive_null"] > 0.99 and leak["would_leak_rate"] > 0.2
    assert verdicts["sessions"]["verdict"] == "ok", verdicts["sessions"]
    assert leak["latency_s"]["max"] == 6 * 86400
    assert report["summary"] == {"ok": 1, "late": 0, "suspicious": 0, "leak": 1}
    assert report["split"]["overlap"] is True and report["split"]["verdict"] == "suspicious", "same day"

    # what a deepchecks-style check sees: drop the Nulls, then score the value; nothing to flag
    naive = {r["user"]: r["last_login"] for r in sorted(rows, key=lambda r: r["event_time"])}
    kept = [(naive[s["user"]], s["churned"]) for s in spine if naive[s["user"]] is not None]
    x, y = np.array([k[0] for k in kept]), np.array([k[1] for k in kept])
    assert len(set(y)) < 2 or abs(roc_auc_score(y, x) - 0.5) < 0.1


def test_command_line_gates_on_a_leak(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    rows, spine = churn_tables(200)
    store = FeatureStore(tmp_path / "fs")
    store.ingest("account", pa.Table.from_pylist(rows), entity=["user"])
    pq.write_table(pa.Table.from_pylist(spine), tmp_path / "spine.parquet")
    cmd = [sys.executable, "-m", "failsoft.cli", "leakage", "audit", "--root", str(tmp_path / "fs"),
           "--spine", str(tmp_path / "spine.parquet"), "--table", "account", "--label", "churned", "--json",
           "--html", str(tmp_path / "report.html")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["summary"]["leak"] == 1
    page = (tmp_path / "report.html").read_text()
    assert "last_login" in page and "<script" not in page and "src=" not in page
    assert page.count("<svg") == 2 and "ROC AUC on the label" in page and "how late its rows landed" in page
    assert "1 leak" in page and "class=leak" in page
