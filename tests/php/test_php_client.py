"""clients/php: its PHPUnit suite (unit tests on a fake transport, integration tests against the real
gateway and servers that refuse, hang, answer 500 and answer garbage), with the Python client's answers to
the same rows for it to match."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from failsoft import Client
from failsoft.demo.procs import Proc, free_port
from tests import misbehaving
from tests.php.conftest import PHP_CLIENT, need


def python_answers(url: str) -> list[dict[str, object]]:
    cases = [("recs", {"user_id": 7}), ("recs", {"user_id": 49}), ("churn", {"x": 3}), ("churn", {"x": 99}),
             ("churn", {"x": 2, "tenure": 5})]  # fmt: skip
    out = []
    with Client(url, timeout_ms=5000) as client:
        for i, (name, row) in enumerate(cases):
            outcome = client.predict(name, row, id=f"same-{i}")
            doc = _doc(outcome)
            out.append({"model": name, "inputs": row, "id": f"same-{i}", "outcome": doc})
    return out


def _doc(outcome: object) -> dict[str, object]:
    import msgspec

    doc = msgspec.to_builtins(outcome)
    assert isinstance(doc, dict)
    doc.pop("latency_ms")
    return doc


def test_phpunit(php_gateway: Proc, tmp_path: Path) -> None:
    need("php", "phpunit")
    expected = tmp_path / "expected.json"
    answers = python_answers(php_gateway.url)
    assert {a["outcome"]["degraded"] for a in answers} == {False, True}, "clamped and clean rows both"
    expected.write_text(json.dumps(answers))
    with (
        misbehaving.hanging() as hanging,
        misbehaving.answering(500, b'{"error": "internal"}') as failing,
        misbehaving.answering(*misbehaving.GARBAGE) as garbage,
    ):
        env = {
            **os.environ,
            "FAILSOFT_TEST_GATEWAY": php_gateway.url,
            "FAILSOFT_TEST_EXPECTED": str(expected),
            "FAILSOFT_TEST_REFUSED": f"http://127.0.0.1:{free_port()}",
            "FAILSOFT_TEST_HANGING": hanging,
            "FAILSOFT_TEST_FAILING": failing,
            "FAILSOFT_TEST_GARBAGE": garbage,
        }
        cmd = [
            "php",
            "-d",
            "apc.enable_cli=1",
            shutil.which("phpunit") or "phpunit",
            "-c",
            "phpunit.xml.dist",
        ]
        done = subprocess.run(cmd, cwd=PHP_CLIENT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "OK (" in done.stdout and "Skipped" not in done.stdout, done.stdout[-3000:]
