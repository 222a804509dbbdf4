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
import msgspec
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

from failsoft.config import FeatureSpec, HttpTierSpec, OipTierSpec, PythonTierSpec
from failsoft.errors import TierError
from failsoft.tiers import Backend, HttpBackend, OipBackend, PythonBackend
from failsoft.validation import Batch
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


# ---- what real engines answer: a classifier's [n, 2] probabilities, request parameters, 4xx ---------------


class Engine:
    """A real HTTP server on loopback answering the Open Inference Protocol as MLServer's scikit-learn
    runtime does for predict_proba ([n, 2]), keeping each request body; a model it does not serve, or a
    request without the content type it needs, is a 400 with its message."""

    def __init__(self, needs_parameters: dict[str, Any] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.needs = needs_parameters or {}

    async def infer(self, request: Any) -> Any:
        from aiohttp import web

        body = await request.json()
        self.bodies.append(body)
        if request.match_info["model"] != "clf":
            return web.json_response({"error": "Model nope with version  not found"}, status=404)
        given = body.get("parameters") or {}
        if any(given.get(k) != v for k, v in self.needs.items()):
            return web.json_response({"error": "Invalid content type: missing content_type=pd"}, status=400)
        n = body["inputs"][0]["shape"][0]
        data = [x for i in range(n) for x in (0.75 - 0.1 * i, 0.25 + 0.1 * i)]
        return web.json_response(
            {
                "model_name": "clf",
                "outputs": [{"name": "predict_proba", "shape": [n, 2], "datatype": "FP64", "data": data}],
            }
        )

    async def __aenter__(self) -> str:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v2/models/{model}/infer", self.infer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_a_classifiers_probabilities_are_read_from_their_column_with_the_parameters_it_needs() -> None:
    from failsoft.errors import InvalidOutput

    engine = Engine(needs_parameters={"content_type": "pd"})
    async with engine as url:
        spec = OipTierSpec(name="oip", url=url, model_name="clf", column=1, parameters={"content_type": "pd"})
        b = OipBackend(spec, {})
        await b.start()
        try:
            out, _ = await answer(b, ROWS[:2])
            assert out == [0.25, 0.35], "P(class 1) of each row"
            assert engine.bodies[-1]["parameters"] == {"content_type": "pd"}
            wide = OipBackend(msgspec.structs.replace(spec, column=2), {})
            await wide.start()
            try:
                with pytest.raises(
                    InvalidOutput, match=r"column 2 of output 'predict_proba' \(shape \[1, 2\]\)"
                ):
                    await answer(wide, ROWS[:1])
            finally:
                await wide.close()
        finally:
            await b.close()


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"model_name": "nope"}, "not found"),  # a model the engine does not serve: 404
        ({"model_name": "clf"}, "content_type=pd"),  # a request without the content type it needs: 400
    ],
)
async def test_a_4xx_is_rejected_with_the_engines_message(spec: dict[str, Any], said: str) -> None:
    from failsoft.errors import TierRejected
    from failsoft.types import Reason

    async with Engine(needs_parameters={"content_type": "pd"}) as url:
        b = OipBackend(OipTierSpec(name="oip", url=url, **spec), {})
        await b.start()
        try:
            with pytest.raises(TierRejected) as info:
                await answer(b, ROWS[:1])
            assert info.value.reason is Reason.REJECTED and said in str(info.value)
        finally:
            await b.close()
