"""The README's "first hour" walkthrough, run as written (a free port instead of 8000), in a fresh folder:
train, describe, check, serve, ask from curl and Python, see a fallback, quarantine, see the audit item."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from failsoft.demo.procs import free_port

README = Path(__file__).resolve().parent.parent / "README.md"


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("## The first hour\n", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```bash\n(.*?)```", section, re.S))


def test_the_first_hour_runs_as_written(tmp_path: Path) -> None:
    script = walkthrough().replace("8000", str(free_port()))
    assert "failsoft serve" in script and "audits list" in script
    # whatever happens, the gateway started in the background does not outlive the test
    script = "set -e\ntrap 'kill %1 2>/dev/null || true' EXIT\n" + script
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for name in ("FAILSOFT_URL", "FAILSOFT_ADMIN_TOKEN", "FAILSOFT_TOKENS_FILE", "FAILSOFT_STORE_URL"):
        env.pop(name, None)
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "portfolio.toml: ok" in out
    assert '"tier":"logreg","degraded":false' in out and "logreg False" in out
    assert '"reason":"invalid_input"' in out and "unknown input 'tenur' (did you mean 'tenure'?)" in out
    assert "churn: quarantined" in out
    assert re.search(r"│ 1\s+│ churn\s+│ fallback", out), out[-2000:]
    assert "restore by admin" in out and "fine again" in out
