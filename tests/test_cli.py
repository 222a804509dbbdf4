from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from failsoft.cli import main

REASONS = {"invalid_input", "circuit_open", "overloaded", "timeout", "error", "invalid_output"}


def test_check_good_and_bad(write_toml: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    good = write_toml('[models.m]\n[[models.m.tiers]]\nkind = "default"\nvalue = 1\n')
    assert main(["check", str(good), "--load"]) == 0
    assert "ok" in capsys.readouterr().out
    bad = write_toml(
        '[models.m]\ndeadline_ms = -1\n[[models.m.tiers]]\nkind = "default"\nvalue = 1\n', "bad.toml"
    )
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: models.m.deadline_ms" in err and "got -1" in err


def test_check_load_says_how_each_in_process_tier_runs(
    write_toml: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        '[models.m]\n[[models.m.inputs]]\nname = "x"\n'
        '[[models.m.tiers]]\nname = "py"\nkind = "python"\ntarget = "tests.helpers:score"\n'
        '[[models.m.tiers]]\nkind = "default"\nvalue = 0.5\n'
    )
    assert main(["check", str(write_toml(text)), "--load"]) == 0
    assert "  py: runs as it is, in its threads" in capsys.readouterr().out


def test_check_load_of_a_tier_that_fails_leaks_no_session(write_toml: Callable[[str], Path]) -> None:
    """A remote tier opened before a python tier that fails to load was left open: "Unclosed client
    session" after the error."""
    text = (
        '[models.m]\n[[models.m.inputs]]\nname = "x"\n'
        '[[models.m.tiers]]\nname = "remote"\nkind = "oip"\nurl = "http://127.0.0.1:9"\nmodel_name = "m"\n'
        '[[models.m.tiers]]\nname = "py"\nkind = "python"\ntarget = "tests.helpers:no_such_thing"\n'
        '[[models.m.tiers]]\nkind = "default"\nvalue = 0.5\n'
    )
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-m", "failsoft.cli", "check", str(write_toml(text)), "--load"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and "no_such_thing" in done.stderr
    assert "Unclosed" not in done.stderr, done.stderr


def test_the_demo_verdict_explains_lateness() -> None:
    from failsoft.demo.run import verdict

    base = {"requests": 100, "non_2xx": 0, "gateway_over_deadline": 0, "over_deadline": 0, "degraded": 7,
            "max_ms": 80.0, "load_average": 3.5, "cores": 2, "gateway_loop_lag_max_ms": 4.0}  # fmt: skip
    ok, said = verdict(base)
    assert ok and "all 100 requests answered" in said and "7 came from a fallback" in said
    ok, said = verdict({**base, "over_deadline": 3})
    assert ok and "3 arrived late as this client measured (worst 80.0 ms)" in said
    assert "load average 3.5 on 2 cores" in said
    ok, said = verdict({**base, "gateway_over_deadline": 2, "non_2xx": 1})
    assert not ok and "1 answers were errors" in said and "gave 2 answers after their deadline" in said


def test_demo_end_to_end(tmp_path: Path) -> None:
    """The main job: it ends by itself, no 5xx, nothing late, every reason of the request path seen."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "failsoft.cli",
            "demo",
            "--duration",
            "12",
            "--json",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]  # the summary says what failed
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["requests"] > 1000
    # the gateway's own measure; what the client saw late on a busy machine is explained, not failed
    assert summary["non_2xx"] == 0 and summary["gateway_over_deadline"] == 0
    assert summary["verdict"].startswith("Verdict: all ") and "within its deadline" in summary["verdict"]
    assert REASONS <= set(summary["by_reason"]), summary["by_reason"]
    assert {"p50_ms", "p99_ms", "max_ms", "degraded", "by_tier"} <= set(summary)
    assert (tmp_path / "state" / "defaults" / "recs.top10.json").exists()
    assert summary["logged_predictions"] == summary["requests"], "every answer is in the prediction log"
    shadow = summary["shadow"]
    assert shadow["candidate"] == "gbm-v2" and shadow["mirrored"] > 0 and shadow["labelled_pairs"] > 0
    assert shadow["verdict"] == "not proven" and "min_shadow_duration" in shadow["failing"]
    assert summary["labels_sent"] > 0 and summary["logged_shadow_answers"] > 0
    assert summary["audits_opened"] >= 1, "the long fault asked a person to look"
    recs, churn = summary["monitor"]["recs"], summary["monitor"]["churn"]
    assert "quarantined" in recs["transitions"] and summary["by_reason"]["quarantined"] > 0
    assert "quarantined" not in churn["transitions"] and churn["windows"] > 0
    # on a loaded machine the heavy tier may answer too few rows of any window for an estimate
    assert churn["estimated"] is None or churn["estimated"]["roc_auc"] > 0.5, churn


def test_the_demo_backend_stops_on_sigterm_while_it_hangs(tmp_path: Path) -> None:
    """A request hanging on purpose (mode hang) does not keep the stand-in engine up after SIGTERM."""
    import signal
    import threading
    import time
    import urllib.request

    from failsoft.demo.procs import Proc

    backend = Proc([sys.executable, "-m", "failsoft.demo.backend", "--mode", "hang"], "/v2/health/ready",
                   tmp_path / "backend.log").start()  # fmt: skip
    assert backend.proc is not None

    def hang() -> None:
        req = urllib.request.Request(f"{backend.url}/v2/models/m/infer", data=b"{}", method="POST")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=30).read()

    caller = threading.Thread(target=hang, daemon=True)
    caller.start()
    time.sleep(0.5)  # the request is in, hanging
    backend.proc.send_signal(signal.SIGTERM)
    try:
        backend.proc.wait(10)  # it gives a hanging request a second, then stops
    finally:
        backend.kill()
    assert backend.proc.returncode in (0, -signal.SIGTERM), (tmp_path / "backend.log").read_text()
