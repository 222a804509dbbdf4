"""The training-set builder against a brute-force reference, on random tables with late corrections,
equal timestamps and TTL edges."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from failsoft.errors import ConfigError
from failsoft.features import FeatureStore, build_training_set
from failsoft.features.store import FeatureDataWarning

T0 = dt.datetime(2026, 1, 1)


def ts(s: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=s)


def reference(rows: list[dict[str, Any]], spine: list[dict[str, Any]], ttl: int | None) -> list[Any]:
    """The definition, written the slow and obvious way."""
    out = []
    for s in spine:
        pt = s["prediction_time"]
        ok = [r for r in rows if r["user"] == s["user"] and r["event_time"] <= pt and r["available_at"] <= pt]
        if not ok:
            out.append(None)
            continue
        best = max(ok, key=lambda r: (r["event_time"], r["available_at"]))
        if ttl is not None and (pt - best["event_time"]).total_seconds() > ttl:
            out.append(None)
        else:
            out.append(best["score"])
    return out


row = st.fixed_dictionaries({
    "user": st.integers(0, 3),
    "event": st.integers(0, 40),
    "latency": st.integers(0, 15),  # how long after the event the row landed: late arrivals, corrections
    "score": st.one_of(st.none(), st.integers(-1000, 1000)),  # a Null is a value too (a cleared field)
})  # fmt: skip
spine_row = st.fixed_dictionaries({"user": st.integers(0, 4), "at": st.integers(0, 60)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(row, min_size=1, max_size=40), st.lists(spine_row, min_size=1, max_size=25),
       st.one_of(st.none(), st.integers(0, 20)))  # fmt: skip
def test_matches_the_brute_force_reference(
    tmp_path_factory: pytest.TempPathFactory,
    raw: list[dict[str, int]],
    raw_spine: list[dict[str, int]],
    ttl: int | None,
) -> None:
    rows = [{"user": r["user"], "event_time": ts(r["event"]), "available_at": ts(r["event"] + r["latency"]),
             "score": r["score"]} for r in raw]  # fmt: skip
    # equal (event_time, available_at) pairs make "the" value ambiguous: keep the first of each
    seen, unique = set(), []
    for r in rows:
        key = (r["user"], r["event_time"], r["available_at"])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    spine = [{"user": s["user"], "prediction_time": ts(s["at"]), "n": i} for i, s in enumerate(raw_spine)]
    store = FeatureStore(tmp_path_factory.mktemp("fs"))
    store.ingest("t", pa.Table.from_pylist(unique), entity=["user"], ttl_s=ttl)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FeatureDataWarning)  # tiny generated spines may precede every row
        got = build_training_set(store, pa.Table.from_pylist(spine), ["t"])
    assert got.column("n").to_pylist() == list(range(len(spine))), "one row per spine row, in spine order"
    assert got.column("score").to_pylist() == reference(unique, spine, ttl)


def test_a_value_not_yet_available_is_not_used(tmp_path: Path) -> None:
    """The churn leak: last_login is cleared (NULL) only after the cancellation landed."""
    rows = [
        {"user": 1, "event_time": ts(0), "available_at": ts(0), "last_login": 5.0},
        {"user": 1, "event_time": ts(10), "available_at": ts(100), "last_login": None},  # cleared late
    ]
    store = FeatureStore(tmp_path)
    store.ingest("logins", pa.Table.from_pylist(rows), entity=["user"])
    spine = pa.Table.from_pylist(
        [{"user": 1, "prediction_time": ts(50)}, {"user": 1, "prediction_time": ts(200)}]
    )
    got = build_training_set(store, spine, ["logins"], out=tmp_path / "train.parquet")
    assert got.column("last_login").to_pylist() == [5.0, None]
    assert (tmp_path / "train.parquet").exists()


def test_two_tables_csv_and_stamped_available_at(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(
        "user,event_time,spend\n1,2026-01-01 00:00:00,3.5\n2,2026-01-01 00:00:10,7\n"
    )
    store = FeatureStore(tmp_path / "fs")
    before = dt.datetime.now()
    store.ingest("spend", tmp_path / "a.csv", entity=["user"], available_at=None)  # stamped now
    plan = [{"user": 1, "event_time": ts(0), "available_at": ts(0), "tier": "pro"}]
    store.ingest("plan", pa.Table.from_pylist(plan), entity=["user"])
    spine = pa.Table.from_pylist([{"user": 1, "prediction_time": T0 + dt.timedelta(days=3650), "n": 0},
                                  {"user": 2, "prediction_time": ts(5), "n": 1}])  # fmt: skip
    got_table = build_training_set(store, spine, ["spend", "plan"])
    assert got_table.column_names == ["user", "prediction_time", "n", "spend", "tier"], (
        "spine columns keep their order"
    )
    got = got_table.to_pylist()
    assert got[0]["spend"] == 3.5 and got[0]["tier"] == "pro"
    assert got[1]["spend"] is None and got[1]["tier"] is None
    assert before.year <= dt.datetime.now().year


def test_errors_name_what_is_wrong(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    with pytest.raises(ConfigError, match="no such feature table"):
        store.table("nope")
    store.ingest("t", pa.Table.from_pylist([{"user": 1, "event_time": ts(0), "available_at": ts(0), "x": 1}]),
                 entity=["user"])  # fmt: skip
    with pytest.raises(ConfigError, match="column not in the spine"):
        build_training_set(store, pa.Table.from_pylist([{"account": 1, "prediction_time": ts(1)}]), ["t"])
    with pytest.raises(ConfigError, match="column not in the source"):
        store.ingest("u", pa.Table.from_pylist([{"id": 1, "event_time": ts(0)}]), entity=["user"])


def test_command_line(tmp_path: Path) -> None:
    from failsoft.cli import main

    (tmp_path / "f.csv").write_text("user,event_time,available_at,x\n1,2026-01-01,2026-01-02,7\n")
    (tmp_path / "spine.csv").write_text("user,prediction_time\n1,2026-01-01 12:00:00\n1,2026-01-03\n")
    root = str(tmp_path / "fs")
    assert main(["features", "ingest", "--root", root, "--name", "f", "--source", str(tmp_path / "f.csv"),
                 "--entity", "user", "--ttl", "30d"]) == 0  # fmt: skip
    out = tmp_path / "train.csv"
    assert main(["features", "build", "--root", root, "--spine", str(tmp_path / "spine.csv"), "--table", "f",
                 "--out", str(out)]) == 0  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[0] == "user,prediction_time,x" and lines[1].endswith(",") and lines[2].endswith(",7")


def test_status_reports_feature_latency(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from failsoft.cli import main

    # values landing on one day, 1 day, 1 day and 3 days after they happened
    (tmp_path / "f.csv").write_text(
        "user,event_time,available_at,x\n1,2026-01-01,2026-01-02,7\n2,2026-01-01,2026-01-02,8\n"
        "3,2025-12-30,2026-01-02,9\n"
    )
    root = str(tmp_path / "fs")
    assert main(["features", "ingest", "--root", root, "--name", "f", "--source", str(tmp_path / "f.csv"),
                 "--entity", "user"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["features", "status", "--root", root, "--json"]) == 0
    (doc,) = json.loads(capsys.readouterr().out)
    assert (doc["table"], doc["rows"], doc["entities"]) == ("f", 3, 3)
    # p95 of (1, 1, 3) days, interpolated linearly: 1 + 0.9 * 2 days
    assert doc["lag_s"] == {"p50": 86400.0, "p95": pytest.approx(2.8 * 86400), "max": 3 * 86400.0}
    assert main(["features", "status", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "1d" in out and "2d 19h" in out and "3d" in out, "durations written as people write them"
