"""What a new user's typical mistakes get from the command line: a message naming what is wrong and the
fix, never a traceback."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from failsoft.cli import main
from failsoft.demo.procs import free_port


def test_a_ttl_spelt_out_is_read_and_written_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "t.parquet"
    import datetime as dt

    times = [dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 2, tzinfo=dt.UTC)]
    pq.write_table(pa.table({"user": [1, 2], "event_time": times, "spend": [3.0, 4.0]}), src)
    args = ["features", "ingest", "--root", str(tmp_path / "fs"), "--name", "t", "--source", str(src),
            "--entity", "user"]  # fmt: skip
    assert main([*args, "--ttl", "30days"]) == 0
    assert "ttl 30d" in capsys.readouterr().out
    assert main([*args, "--ttl", "30 parsecs"]) == 2
    err = capsys.readouterr().err
    assert "--ttl '30 parsecs' is not a duration" in err and "30d" in err


def test_audits_without_a_gateway_names_the_url_and_the_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAILSOFT_URL", raising=False)
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["audits", "list", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the gateway at {url}" in err and "FAILSOFT_URL" in err


@pytest.mark.parametrize(
    ("extra", "says"),
    [(["--action", "replace_default", "--value", "abc"], "--value 'abc' is not JSON"),
     (["--action", "keep_out", "--for", "6 parsecs"], "--for '6 parsecs' is not a duration")],
)  # fmt: skip
def test_audit_values_and_spans_are_checked_before_sending(
    capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["audits", "resolve", "1", "--url", url, *extra]) == 2
    assert says in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`failsoft history --json | head` printed a BrokenPipeError traceback."""
    script = (
        "import sys, failsoft.cli as c, failsoft.server.commands as s\n"
        "def fn(args):\n"
        "    for i in range(100000):\n"
        "        print('line', i)\n"
        "    return 0\n"
        "s._check = fn\n"
        "sys.exit(c.main(['check', 'x.toml']))\n"
    )
    (tmp_path / "many.py").write_text(script)
    done = subprocess.run(
        f"{sys.executable} {tmp_path / 'many.py'} | head -1", shell=True, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.stdout == "line 0\n"
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def _frames(tmp_path: Path) -> tuple[Path, Path, Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    n = 400
    score = rng.uniform(size=n)
    churned = (rng.uniform(size=n) < score).astype(float)
    ref, ana, late = tmp_path / "ref.parquet", tmp_path / "new.parquet", tmp_path / "late_labels.csv"
    pq.write_table(pa.table({"score": score, "churned": churned}), ref)
    ids = [f"r{i}" for i in range(n)]  # request ids are strings
    pq.write_table(pa.table({"id": ids, "score": score}), ana)
    late.write_text("id,churned\n" + "".join(f"r{i},{int(c)}\n" for i, c in enumerate(churned)))
    return ref, ana, late


def test_estimate_joins_late_labels_on_string_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """String ids crashed: TypeError: only 0-dimensional arrays can be converted to Python scalars."""
    import json

    ref, ana, late = _frames(tmp_path)
    args = ["estimate", "--reference", str(ref), "--analysis", str(ana), "--score-column", "score",
            "--target-column", "churned", "--analysis-targets", str(late), "--id-column", "id",
            "--chunk-size", "200", "--json"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert [c["labelled"] for c in report["chunks"]] == [200, 200]
    assert all(c["realized"] is not None for c in report["chunks"])


def test_a_missing_column_is_named_with_the_closest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed pyarrow's FieldRef dump."""
    ref, ana, _ = _frames(tmp_path)
    args = ["estimate", "--reference", str(ref), "--analysis", str(ana), "--score-column", "score",
            "--target-column", "churn"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no column 'churn' (it has score, churned); did you mean 'churned'?" in err
    assert "FieldRef" not in err


def test_a_labels_file_without_label_says_which_column(
    tmp_path: Path, write_toml: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """It said: id 'r0' has no label."""
    _, _, late = _frames(tmp_path)
    text = f'data_dir = "{tmp_path / "state"}"\n[models.m]\n[[models.m.tiers]]\nkind = "default"\nvalue = 1\n'
    toml = write_toml(text)
    assert main(["labels", "ingest", str(late), "--portfolio", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "no column 'label' (it has id, churned)" in err and "id, label" in err


def test_times_are_iso_with_the_offset_and_piped_tables_are_not_cut() -> None:
    import re

    from rich.table import Table

    from failsoft.terminal import PIPED_WIDTH, console, stamp

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", stamp(1_764_000_000.0))
    assert stamp(None) == "-"
    out = console()
    assert out.width == PIPED_WIDTH  # pytest captures stdout: not a terminal
    t = Table(*(f"est. accuracy {i}" for i in range(6)))
    t.add_row(*("0.9123" for _ in range(6)))
    with out.capture() as captured:
        out.print(t)
    assert "…" not in captured.get() and "est. accuracy 5" in captured.get()


def _run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run the command with a pseudo-terminal as its standard error; what it drew there."""
    import os
    import pty

    main_fd, tty_fd = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=tty_fd, stdin=subprocess.DEVNULL)
    os.close(tty_fd)
    chunks = []
    while True:
        try:
            data = os.read(main_fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(main_fd)
    return proc.wait(60), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("quiet", [False, True])
def test_long_offline_work_shows_progress_on_a_terminal_only(tmp_path: Path, quiet: bool) -> None:
    """profile, estimate and leakage audit showed a blank terminal until the end (11.7-24.5 s on 1M rows)."""
    ref, ana, _ = _frames(tmp_path)
    cmd = [sys.executable, "-m", "failsoft.cli", "estimate", "--reference", str(ref), "--analysis", str(ana),
           "--score-column", "score", "--target-column", "churned"]  # fmt: skip
    cmd += ["--quiet"] if quiet else []
    code, drawn = _run_on_a_terminal(cmd)
    assert code == 0
    assert ("failsoft estimate" in drawn) is not quiet, drawn[-500:]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert piped.returncode == 0 and "failsoft estimate" not in piped.stderr and piped.stderr == ""


def test_feature_times_that_are_not_times_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A numeric event_time printed DuckDB's ConversionException with its traceback."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "t.parquet"
    pq.write_table(pa.table({"user": [1, 2], "event_time": [1.0, 2.0], "spend": [3.0, 4.0]}), src)
    args = ["features", "ingest", "--root", str(tmp_path / "fs"), "--name", "t", "--source", str(src),
            "--entity", "user"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "event_time: cannot be read as a date and time" in err and "ISO-8601" in err


def test_an_unknown_model_gets_a_suggestion() -> None:
    from failsoft.errors import UnknownModel

    assert "unknown model 'chrun' (did you mean 'churn'?); this portfolio serves churn, recs" in str(
        UnknownModel("chrun", ["recs", "churn"])
    )


def test_version_and_help_say_what_a_new_user_asks(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"failsoft {version('failsoft')}\n"
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "the port to listen on (default 8000)" in said and "(default 127.0.0.1, this machine only" in said
    with pytest.raises(SystemExit):
        main(["audits", "--help"])
    said = capsys.readouterr().out
    assert "resolve only:" in said and "keep_out          keep the model on its fallbacks" in said
    assert "ack ID            say someone is looking" in said


def test_resolve_actions_are_the_queues_own() -> None:
    from failsoft.audit.actions import ACTIONS
    from failsoft.audit.commands import RESOLVE_ACTIONS

    assert RESOLVE_ACTIONS == tuple(a for a in ACTIONS if a != "ack")


def test_resolve_flags_on_another_verb_are_said(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["audits", "list", "--action", "restore", "--url", url]) == 2
    assert "--action go with resolve: failsoft audits resolve ID --action" in capsys.readouterr().err


def test_a_span_may_be_written_unquoted_and_the_gateway_is_named(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--for 2 hours` failed with "unrecognized arguments: hours"; and with FAILSOFT_URL unset the command
    said nothing of which gateway it used."""
    from failsoft import control_client

    sent: list[tuple[str, str, object]] = []
    real = control_client.call

    def call(args: object, method: str, path: str, body: object = None, **kw: object) -> object:
        # what the command line says before it sends, then the answer a gateway would give
        with contextlib.suppress(control_client.Refused):
            real(args, method, "/", timeout_s=0.01)  # type: ignore[arg-type]
        sent.append((method, path, body))
        return {"item": {"id": 4, "model": "m", "status": "resolved"}, "action": {"action": "keep_out"}}

    monkeypatch.setattr(control_client, "call", call)
    monkeypatch.delenv("FAILSOFT_URL", raising=False)
    assert main(["audits", "resolve", "4", "--action", "keep_out", "--for", "2", "hours"]) == 0
    assert sent == [("POST", "/v1/audits/4/resolve", {"comment": "", "action": "keep_out", "for_s": 7200.0})]
    assert "gateway: http://127.0.0.1:8000 (the default: FAILSOFT_URL is not set)" in capsys.readouterr().err
    monkeypatch.setenv("FAILSOFT_URL", "http://127.0.0.1:9")
    assert main(["audits", "resolve", "4", "--action", "keep_out", "--for", "90m"]) == 0
    assert sent[-1][2] == {"comment": "", "action": "keep_out", "for_s": 5400.0}
    assert "gateway: http://127.0.0.1:9 (FAILSOFT_URL)" in capsys.readouterr().err


def test_a_port_in_use_is_said_before_anything_loads(tmp_path: Path) -> None:
    """It exited 3 (the code of a tier that cannot answer), after loading every model and making a token."""
    import socket

    from tests.portfolios import default_tier, model, write

    path = write(tmp_path / "portfolio.toml", {"m": model(default_tier(0.5), inputs=())},
                 data_dir=str(tmp_path / "state"))  # fmt: skip
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        for workers in ("1", "2"):
            done = subprocess.run(
                [sys.executable, "-m", "failsoft.cli", "serve", str(path), "--port", str(port), "--workers",
                 workers], capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert done.returncode == 4, done.stderr
            assert done.stderr.startswith(f"error: 127.0.0.1:{port} is in use"), done.stderr
            assert "pass another --port" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "state" / "admin-token").exists(), "nothing was made before the port was checked"
