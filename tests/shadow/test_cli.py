"""promote / rollback / history / shadow report / labels ingest from the command line, on a real SQLite
log: a worse candidate is refused with the failing rule named, a better one is promoted, a forced one
needs a reason, require_approval waits for a person."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from failsoft.cli import main
from failsoft.store import open_store
from tests.portfolios import default_tier, model, python_tier, write
from tests.shadow.test_evaluate import fill


def setup(tmp: Path, quality: float, approval: bool = False) -> str:
    (tmp / "state").mkdir()
    fill(tmp / "state" / "failsoft.db", quality=quality)
    cfg = tmp / "portfolio.toml"
    promotion = {"min_shadow_s": 0, "min_labelled": 500, "metric": "auc", "margin": 0.01}
    if approval:
        promotion["require_approval"] = True
    m = model(
        python_tier("cpu", "tests.helpers:score"),
        default_tier(0.5),
        candidates=(python_tier("cand", "tests.helpers:score", sample=0.5),),
        promotion=promotion,
    )
    write(cfg, {"m": m}, data_dir="state")
    return str(cfg)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_refused_then_forced_then_rolled_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, quality=0.2)
    code, out = run(capsys, "promote", "m", "cand", "--portfolio", cfg, "--json")
    assert code == 1 and [r["rule"] for r in json.loads(out)["failing"]] == ["non_inferiority"]
    assert main(["promote", "m", "cand", "--portfolio", cfg, "--force"]) == 1  # a forced flip needs a reason
    code, out = run(capsys, "promote", "m", "cand", "--portfolio", cfg, "--force", "--reason", "hotfix",
                    "--by", "ana")  # fmt: skip
    assert code == 0 and out.startswith("m: promote (forced) cpu -> cand by ana at ")
    code, out = run(capsys, "shadow", "report", "m", "--portfolio", cfg, "--json")
    doc = json.loads(out)
    assert doc["live"] == "cand" and [c["candidate"] for c in doc["candidates"]] == ["cpu"]
    code, out = run(capsys, "rollback", "m", "--portfolio", cfg, "--reason", "worse after all", "--json")
    assert code == 0 and json.loads(out)["to"] == "cpu"
    code, out = run(capsys, "history", "m", "--portfolio", cfg, "--json")
    flips = json.loads(out)
    assert [(f["action"], f["to"], f["actor"], f["forced"]) for f in flips] == [
        ("rollback", "cpu", flips[0]["actor"], False), ("promote", "cand", "ana", True)]  # fmt: skip
    assert flips[1]["reason"] == "hotfix" and not flips[1]["evidence"]["verdict"]["passed"]
    code, out = run(capsys, "history", "m", "--portfolio", cfg)
    assert "hotfix" in out and code == 0
    # a second rollback would re-promote the candidate just taken out, unchecked: refused unless forced
    code, out = run(capsys, "rollback", "m", "--portfolio", cfg, "--json")
    assert code == 1 and "already a rollback" in json.loads(out)["error"]
    code, out = run(capsys, "rollback", "m", "--portfolio", cfg, "--force", "--reason", "cpu broke", "--json")
    assert code == 0 and json.loads(out)["to"] == "cand" and json.loads(out)["forced"]


def test_a_proven_candidate_is_promoted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, quality=2.0)
    code, out = run(capsys, "shadow", "report", "m", "--portfolio", cfg)
    assert code == 0 and "may be promoted" in out and "non_inferiority" in out
    code, out = run(capsys, "promote", "m", "cand", "--portfolio", cfg, "--json")
    assert code == 0 and json.loads(out)["status"] == "flipped" and not json.loads(out)["forced"]


def test_require_approval_waits_in_the_audit_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = setup(tmp_path, quality=2.0, approval=True)
    code, out = run(capsys, "promote", "m", "cand", "--portfolio", cfg, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["status"] == "pending_approval"
    store = open_store(f"sqlite:///{tmp_path / 'state' / 'failsoft.db'}")
    store.connect()
    kind, status = store.execute("SELECT kind, status FROM audit_items WHERE id = ?", [doc["audit_id"]])[0]
    assert (kind, status) == ("approval", "open")
    assert store.execute("SELECT count(*) FROM flips")[0][0] == 0
    store.close()
    code, out = run(capsys, "promote", "m", "cand", "--portfolio", cfg)
    assert "waits for approval: audit item" in out and "failsoft audits show" in out


def test_labels_ingest_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup(tmp_path, quality=1.0)
    f = tmp_path / "late.csv"
    f.write_text("id,label,time\nx1,1,2026-11-01T10:00:00\nx2,0,\nx3,0.25,1790000000\n")
    for _ in range(2):
        code, out = run(capsys, "labels", "ingest", str(f), "--portfolio", cfg, "--json")
        assert code == 0 and json.loads(out) == {"received": 3}
    store = open_store(f"sqlite:///{tmp_path / 'state' / 'failsoft.db'}")
    store.connect()
    got = dict(store.execute("SELECT request_id, label FROM labels WHERE request_id LIKE 'x%'"))
    assert got == {"x1": "1", "x2": "0", "x3": "0.25"}
    store.close()
    (tmp_path / "bad.csv").write_text("request,y\n1,2\n")
    assert main(["labels", "ingest", str(tmp_path / "bad.csv"), "--portfolio", cfg]) == 2
