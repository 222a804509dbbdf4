"""One contract, every tier backend: a batch of rows in, one answer per row out, failures raised (never
returned), and ``done`` called exactly once. Remote kinds run against the real demo backend process."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from failsoft.config import FeatureSpec, HttpTierSpec, OipTierSpec, PythonTierSpec
from failsoft.errors import TierError
from failsoft.schema import Batch
from failsoft.tiers import Backend, HttpBackend, OipBackend, PythonBackend
from tests.stack import Proc

FEATURES = tuple(FeatureSpec(name=f"f{i}", min=-10, max=10) for i in range(4))
X, Y = make_classification(n_samples=200, n_features=4, n_informative=3, n_redundant=0, random_state=0)
ROWS = [{f"f{i}": float(v) for i, v in enumerate(x)} for x in X[:3]]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract") / "lr.joblib"
    joblib.dump(LogisticRegression().fit(X, Y), path)
    return path


@pytest.fixture(scope="module")
def remote(model_file: Path) -> Iterator[Proc]:
    proc = Proc(
        [sys.executable, "-m", "failsoft.demo.backend", "--model", f"lr={model_file}"],
        "/v2/health/ready",
        model_file.parent / "backend.log",
    ).start()
    yield proc
    proc.stop()


def set_mode(remote: Proc, mode: str) -> None:
    req = urllib.request.Request(
        remote.url + "/control", data=json.dumps({"mode": mode}).encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200


KINDS = ["python-callable", "python-compiled", "python-thread", "oip", "http"]


def build(kind: str, model_file: Path, remote: Proc) -> Backend:
    resolve = Path
    if kind == "python-callable":
        spec = PythonTierSpec(name=kind, target="tests.helpers:score4")
        return PythonBackend(spec, FEATURES, resolve, "t.toml", "k")
    if kind in {"python-compiled", "python-thread"}:
        spec = PythonTierSpec(name=kind, path=str(model_file), compile=kind == "python-compiled")
        return PythonBackend(spec, FEATURES, resolve, "t.toml", "k")
    if kind == "oip":
        return OipBackend(OipTierSpec(name=kind, url=remote.url, model_name="lr"), {})
    return HttpBackend(HttpTierSpec(name=kind, url=remote.url + "/json/lr", output_path="result.score"))


@pytest.fixture(params=KINDS)
async def backend(request: pytest.FixtureRequest, model_file: Path, remote: Proc) -> AsyncIterator[Backend]:
    b = build(request.param, model_file, remote)
    await b.start()
    yield b
    await b.close()
    set_mode(remote, "ok")


async def answer(b: Backend, rows: list[dict[str, Any]]) -> tuple[list[Any], int]:
    calls = 0

    def done() -> None:
        nonlocal calls
        calls += 1

    batch = Batch(tuple(f.name for f in FEATURES), rows)
    if b.inline:
        return b.predict_inline(batch), 1
    out = await b.predict(batch, "rid", done)
    await asyncio.sleep(0.01)  # a thread's done() arrives through the loop
    return out, calls


async def test_one_answer_per_row(backend: Backend) -> None:
    out, done_calls = await answer(backend, ROWS[:1])
    assert len(out) == 1 and 0 <= out[0] <= 1 and done_calls == 1
    out, _ = await answer(backend, ROWS)
    assert len(out) == 3 and all(0 <= v <= 1 for v in out)


async def test_kinds_agree_on_the_same_model(model_file: Path, remote: Proc) -> None:
    answers = {}
    for kind in ["python-compiled", "python-thread", "oip", "http"]:
        b = build(kind, model_file, remote)
        await b.start()
        answers[kind] = (await answer(b, ROWS[:1]))[0][0]
        await b.close()
    assert max(answers.values()) - min(answers.values()) < 1e-9, answers


@pytest.mark.parametrize("kind", ["oip", "http"])
@pytest.mark.parametrize("mode", ["error", "garbage"])
async def test_remote_failures_raise_tier_errors(
    kind: str, mode: str, model_file: Path, remote: Proc
) -> None:
    b = build(kind, model_file, remote)
    await b.start()
    set_mode(remote, mode)
    try:
        raised = 0
        for _ in range(5):  # garbage comes in five shapes, one after another
            try:
                _, done_calls = await answer(b, ROWS[:1])
            except TierError:
                raised += 1
                continue
            # some garbage is well-formed JSON with bad values: the chain's output check catches those
            assert mode == "garbage" and done_calls == 1
        assert raised == 5 if mode == "error" else raised >= 2
    finally:
        set_mode(remote, "ok")
        await b.close()


async def test_connection_refused_is_a_tier_error(model_file: Path) -> None:
    dead = Proc([], "", model_file.parent / "x.log")  # a free port nobody listens on
    b = OipBackend(OipTierSpec(name="oip", url=dead.url, model_name="lr"), {})
    await b.start()
    with pytest.raises(TierError, match="calling"):
        await answer(b, ROWS[:1])
    await b.close()
