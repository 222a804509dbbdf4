"""Proving every tier answers before traffic does (failsoft/probe.py): a tier set up wrongly is an error
that names the tier, what it answered and the fix; a backend merely down, or a shadow candidate, is a
warning. Real MLServer cases are in tests/engines/test_mlserver.py."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from failsoft import Portfolio
from failsoft.cli import main
from failsoft.config import FeatureSpec
from failsoft.demo.procs import free_port
from failsoft.probe import Finding, prove, sample_row
from tests.portfolios import default_tier, model, oip_tier, python_tier, write

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(int)
PROBABILITY = {"type": "float", "min": 0, "max": 1}


async def findings(path: Path) -> list[Finding]:
    async with Portfolio.from_toml(path) as p:
        return await prove(p.chains)


def one_model(tmp_path: Path, tier: dict[str, object], inputs: tuple[str, ...], **keys: object) -> Path:
    m = model(tier, default_tier(0.5), inputs=inputs, output=PROBABILITY, **keys)
    return write(tmp_path, {"m": m}, trusted_model_dirs=[str(tmp_path)])


def test_sample_row_passes_every_declared_check() -> None:
    specs = [
        FeatureSpec(name="a", min=2, max=4),
        FeatureSpec(name="b", type="int", min=1),
        FeatureSpec(name="c", type="string", categories=["gold", "silver"]),
        FeatureSpec(name="d", type="bool"),
        FeatureSpec(name="e", default=7.5),
    ]
    assert sample_row(specs) == {"a": 3.0, "b": 1, "c": "gold", "d": False, "e": 7.5}


async def test_a_model_fitted_on_more_features_than_declared(tmp_path: Path) -> None:
    joblib.dump(LogisticRegression().fit(X, Y), tmp_path / "lr.joblib")
    path = one_model(tmp_path, python_tier("cpu", path=tmp_path / "lr.joblib"), ("a", "b", "c"))
    [f] = await findings(path)
    assert (f.tier, f.severity) == ("cpu", "error")
    assert f.problem == "the model expects 4 features; 3 inputs are declared (a, b, c)"
    assert "[[models.m.inputs]]" in f.fix


async def test_a_model_fitted_on_named_columns_in_another_order(tmp_path: Path) -> None:
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    joblib.dump(LogisticRegression().fit(frame, Y), tmp_path / "lr.joblib")
    path = one_model(tmp_path, python_tier("cpu", path=tmp_path / "lr.joblib"), ("b", "a", "c", "d"))
    [f] = await findings(path)
    assert f.severity == "error" and "fitted on (a, b, c, d) in that order" in f.problem
    assert "wrong feature" in f.problem
    right = one_model(tmp_path, python_tier("cpu", path=tmp_path / "lr.joblib"), ("a", "b", "c", "d"))
    assert await findings(right) == []


async def test_an_answer_that_fails_the_output_check(tmp_path: Path) -> None:
    path = one_model(tmp_path, python_tier("cpu", "tests.helpers:garbage"), ("x",))
    [f] = await findings(path)
    assert f.severity == "error" and "fails the output check" in f.problem and "'not a number'" in f.problem


async def test_a_flaky_tier_is_not_a_configuration_fault(tmp_path: Path) -> None:
    path = one_model(tmp_path, python_tier("cpu", "tests.helpers:flaky"), ("x",))
    assert await findings(path) == []


async def test_a_backend_down_at_start_and_a_broken_candidate_are_warnings(tmp_path: Path) -> None:
    down = oip_tier("engine", f"http://127.0.0.1:{free_port()}", "m", timeout_ms=50)
    boom = python_tier("new", "tests.helpers:boom")
    m = model(down, default_tier(0.5), inputs=("x",), output=PROBABILITY, candidates=(boom,))
    path = write(tmp_path, {"m": m})
    found = {f.tier: f for f in await findings(path)}
    assert found["engine"].severity == "warning" and "unreachable now" in found["engine"].problem
    assert found["new"].severity == "warning" and "model exploded" in found["new"].problem


def test_check_load_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    down = oip_tier("engine", f"http://127.0.0.1:{free_port()}", "m", timeout_ms=50)
    (tmp_path / "warn").mkdir()
    warn = write(tmp_path / "warn", {"m": model(down, default_tier(0.5), inputs=("x",), output=PROBABILITY)})
    assert main(["check", "--load", str(warn)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().endswith(": ok (1 warning(s))") and "warning: m, tier engine: unreachable now" in err
    bad = one_model(tmp_path, python_tier("cpu", "tests.helpers:garbage"), ("x",))
    assert main(["check", "--load", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert "error: m, tier cpu: its answer to a sample row" in err and ": ok" not in out


def test_check_says_only_what_matters_for_a_tier_that_cannot_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Four declared inputs for a model of three features: the error, not a hint about how the tier runs
    ("can hold the interpreter") or a warning that compiling it failed."""
    x3 = X[:, :3]
    joblib.dump(LogisticRegression().fit(x3, Y), tmp_path / "lr.joblib")
    path = one_model(tmp_path, python_tier("cpu", path=tmp_path / "lr.joblib"), ("a", "b", "c", "d"))
    with caplog.at_level("WARNING"):
        assert main(["check", "--load", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "error: m, tier cpu: the model expects 3 features; 4 inputs are declared" in err
    assert "interpreter" not in out + err and "cpu:" not in out, out
    assert not [r for r in caplog.records if "compiled" in r.getMessage()], caplog.text


def test_check_without_load_finds_a_missing_model_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said "ok" for a model file that does not exist."""
    path = one_model(tmp_path, python_tier("cpu", path=tmp_path / "nope.joblib"), ("a", "b", "c"))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models.m.tiers[0].path" in err and "nope.joblib does not exist" in err
    joblib.dump(LogisticRegression().fit(X[:, :3], Y), tmp_path / "nope.joblib")
    assert main(["check", str(path)]) == 0
    assert "ok (its files are there; --load also loads every model" in capsys.readouterr().out
