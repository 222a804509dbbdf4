"""deploy/Containerfile: linted by hadolint, in the field's conventions (a slim pinned base, a non-root
numeric user, OCI labels, no secrets), and its command line run on this machine as the image would run it:
the portfolio read from a read-only folder, the state in FAILSOFT_DATA_DIR, every interface, --workers
auto. The image itself is not built here: its base comes from a container registry, which this machine
does not reach."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from failsoft.demo.procs import free_port, wait_http
from tests.http import post
from tests.portfolios import default_tier, model, python_tier, toml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    """(instruction, argument) pairs, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_passes() -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "hadolint"), str(CONTAINERFILE)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_conventions_of_the_field() -> None:
    steps = instructions()
    final = steps[max(i for i, (w, _) in enumerate(steps) if w == "FROM") :]
    base = dict(s for s in steps if s[0] == "ARG" and "=" in s[1] for s in [("ARG", s[1])])
    assert re.fullmatch(r"PYTHON=3\.\d+\.\d+-slim-\w+", next(a for w, a in steps if w == "ARG")), (
        "a pinned slim base"
    )
    assert base
    (user,) = [a for w, a in final if w == "USER"]
    assert re.fullmatch(r"\d+:\d+", user) and not user.startswith("0"), "a non-root numeric user"
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    env = " ".join(a for w, a in final if w == "ENV")
    assert not re.search(r"TOKEN|PASSWORD|SECRET|STORE_URL", env), "no secrets baked in"
    assert "FAILSOFT_DATA_DIR=/var/lib/failsoft" in env
    assert ("VOLUME", '["/var/lib/failsoft"]') in final and ("STOPSIGNAL", "SIGTERM") in final


def test_its_command_line_runs_as_the_image_runs_it(tmp_path: Path) -> None:
    steps = dict(instructions())
    command = json.loads(steps["ENTRYPOINT"]) + json.loads(steps["CMD"])
    assert command[:3] == ["failsoft", "serve", "/etc/failsoft/portfolio.toml"]
    etc, data = tmp_path / "etc-failsoft", tmp_path / "var-lib-failsoft"
    etc.mkdir()
    data.mkdir()
    churn = model(python_tier("cpu", "tests.helpers:score"), default_tier(0.2),
                  inputs=({"name": "x", "min": 0, "max": 10},))  # fmt: skip
    (etc / "portfolio.toml").write_text(toml({"churn": churn}))  # no data_dir: the image's variable names it
    etc.chmod(0o555)
    port = free_port()
    args = [a.replace("/etc/failsoft", str(etc)) for a in command[1:]]
    args[args.index("--port") + 1] = str(port)
    env = {**os.environ, "FAILSOFT_DATA_DIR": str(data), "FAILSOFT_DRAIN_S": "0.5", "PYTHONPATH": str(ROOT)}
    with (tmp_path / "serve.log").open("wb") as log:
        cmd = [sys.executable, "-m", "failsoft.cli", *args]
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, cwd=tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", proc)
        reply = post(f"http://127.0.0.1:{port}/v1/models/churn/predict", {"inputs": {"x": 4}})
        assert reply.status_code == 200 and reply.json()["outputs"] == 0.4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "serve.log").read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        etc.chmod(0o755)
    assert (data / "failsoft.db").exists(), "the state went to FAILSOFT_DATA_DIR"
    assert not (tmp_path / "failsoft-data").exists() and sorted(p.name for p in etc.iterdir()) == [
        "portfolio.toml"
    ]
