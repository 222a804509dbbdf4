"""Models loaded on first use under a memory budget (tiers/loader.py): a cold model's first request is
answered at once by its next tier with the reason ``loading``, never kept waiting; its model loads off the
event loop and answers from then on; past the budget the least recently used is unloaded and its memory
given back; a model that fails to load is passed by with the error and tried again later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from failsoft import Portfolio, Reason
from failsoft.tiers.loader import RETRY_S, Loader, resident_bytes
from tests.helpers import until
from tests.portfolios import default_tier, model, python_tier, write

MB = 1 << 20


class Fake:
    """A lazy tier whose model is ``size`` bytes of numbers (0: nothing), or whose load raises."""

    def __init__(self, model: str, size: int = 0, file_size: int = 10 * MB, fails: bool = False) -> None:
        self.name, self.model = "cpu", model
        self.size, self.file_size, self.fails = size, file_size, fails
        self.last_use = 0.0
        self.loaded = False
        self.held: np.ndarray | None = None
        self.loads = 0

    def prepare_args(self) -> None:  # loaded in this process, not by the load helper
        return None

    def load(self, prepared: object) -> Callable[[], None]:
        self.loads += 1
        if self.fails:
            raise OSError("model file is truncated")
        held = np.ones(self.size // 8) if self.size else None

        def install() -> None:
            self.held, self.loaded = held, True

        return install

    def unload(self) -> None:
        self.held, self.loaded = None, False

    def file_bytes(self) -> int:
        return self.file_size


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_past_the_budget_the_least_recently_used_is_unloaded() -> None:
    clock = Clock()
    loader = Loader(budget_bytes=25 * MB, clock=clock)  # two 10 MB models fit, not three
    a, b, c = Fake("a"), Fake("b"), Fake("c")
    assert loader.want(a) == (Reason.LOADING, "its model is loading (first use)")
    assert loader.want(a)[0] == Reason.LOADING, "asked again while loading: one load"
    await until(lambda: a.loaded)
    clock.now += 1
    loader.want(b)
    await until(lambda: b.loaded)
    clock.now += 1
    a.last_use = clock.now  # a used after b: b is now the least recently used
    clock.now += 1
    loader.want(c)
    await until(lambda: c.loaded)
    assert (a.loaded, b.loaded, c.loaded) == (True, False, True)
    assert a.loads == 1 and (loader.loads, loader.unloads) == (3, 1)
    assert loader.held == sum(loader.cost.values()) and 20 * MB <= loader.held <= 25 * MB
    assert len(loader.cost) == 2
    loader.close()


async def test_a_model_that_fails_to_load_is_passed_by_with_why_and_tried_again_later() -> None:
    clock = Clock()
    loader = Loader(clock=clock)
    bad = Fake("bad", fails=True)
    loader.want(bad)
    await until(lambda: loader.failures == 1)
    reason, detail = loader.want(bad)
    assert reason == Reason.ERROR and "model file is truncated" in detail and bad.loads == 1
    clock.now += RETRY_S
    bad.fails = False
    assert loader.want(bad)[0] == Reason.LOADING
    await until(lambda: bad.loaded)
    loader.close()


async def test_an_unloaded_models_memory_goes_back_to_the_system() -> None:
    loader = Loader(budget_bytes=80 * MB)
    big, other = Fake("big", size=64 * MB, file_size=0), Fake("other", size=64 * MB, file_size=0)
    loader.want(big)
    await until(lambda: big.loaded)
    assert loader.cost[big] >= 60 * MB, "measured: what the resident size grew by"
    holding = resident_bytes()
    loader.want(other)  # 128 MB is past the budget: big goes
    await until(lambda: other.loaded and not big.loaded)
    await until(lambda: resident_bytes() < holding + 30 * MB)  # other's 64 MB came in, big's went out
    loader.close()


def lr_portfolio(tmp_path: Path, names: list[str], **server: object) -> Path:
    (tmp_path / "models").mkdir()
    x = np.random.default_rng(0).uniform(0, 1, (200, 2))
    y = (x[:, 0] > x[:, 1]).astype(int)
    models = {}
    for name in names:
        joblib.dump(LogisticRegression().fit(x, y), tmp_path / "models" / f"{name}.joblib")
        tiers = (python_tier("cpu", path=tmp_path / "models" / f"{name}.joblib"), default_tier(0.5))
        inputs = ({"name": "a", "min": 0, "max": 1}, {"name": "b", "min": 0, "max": 1})
        models[name] = model(*tiers, inputs=inputs, deadline_ms=500)
    models[names[0]]["preload"] = True
    return write(tmp_path, models, trusted_model_dirs=[str(tmp_path / "models")],
                 server={"load": "first_use", **server}, store={"log_predictions": False})  # fmt: skip


async def test_a_cold_models_first_request_is_answered_at_once_by_its_next_tier(tmp_path: Path) -> None:
    path = lr_portfolio(tmp_path, ["hot", "cold"])
    async with Portfolio.from_toml(path) as p:
        tiers = {m.name: m.chain[0] for m in p.describe()}
        assert tiers["hot"].loaded and tiers["hot"].load == "start", "preload = true"
        assert not tiers["cold"].loaded and tiers["cold"].load == "first_use"
        first = await p.predict("cold", {"a": 0.9, "b": 0.1})
        assert (first.tier, first.reason, first.outputs) == ("default", Reason.LOADING, 0.5)
        assert first.skips[0].detail == "its model is loading (first use)"
        await until(lambda: p.loader.loads == 1)
        answer = await p.predict("cold", {"a": 0.9, "b": 0.1})
        assert answer.tier == "cpu" and not answer.degraded and answer.outputs > 0.5
        assert (await p.predict("hot", {"a": 0.9, "b": 0.1})).tier == "cpu"
        assert len(p.loader.cost) == 1, "the preloaded model is outside the budget's count"


async def test_first_requests_of_many_cold_models_at_once_never_wait(tmp_path: Path) -> None:
    names = [f"m{i}" for i in range(12)]
    path = lr_portfolio(tmp_path, names, memory_budget_mb=1)
    async with Portfolio.from_toml(path) as p:
        answers = await asyncio.gather(*(p.predict(n, {"a": 0.2, "b": 0.7}) for n in names[1:]))
        assert {(a.tier, a.reason) for a in answers} == {("default", Reason.LOADING)}
        assert max(a.latency_ms for a in answers) < 50, "answered, not kept waiting for a load"
        await until(lambda: p.loader.loads == len(names) - 1)
        assert p.loader.held <= MB or len(p.loader.cost) == 1, "within the budget (or the one it holds)"


@pytest.mark.parametrize("load", ["start", "first_use"])
def test_the_loading_mode_is_a_server_key(tmp_path: Path, load: str) -> None:
    from failsoft import config

    spec = config.load(lr_portfolio(tmp_path, ["a"], memory_budget_mb=64) if load == "first_use" else
                       write(tmp_path, {"a": model(default_tier(0.5))}))  # fmt: skip
    assert spec.server.load == load
