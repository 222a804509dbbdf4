"""The load helper (tiers/helper.py): a model loaded on first use is loaded, compiled, proven and measured
in a process of its own, at SCHED_IDLE, and handed over pickled; it answers as if loaded here. A model whose
load ends the helper fails to load without harm to the serving process, and the next load starts a new
helper; a model that cannot be pickled is loaded here."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import failsoft.tiers.helper as helper_module
from failsoft import Portfolio, Reason
from tests.helpers import unpickled_slowly, until
from tests.tiers.test_loader import lr_portfolio

ROW = {"a": 0.9, "b": 0.1}


class Locked(LogisticRegression):
    """A model that cannot be pickled once loaded: it holds a lock."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.lock = threading.Lock()


class Exits:
    """A model file whose load ends the process loading it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return os._exit, (7,)


async def loaded(p: Portfolio, name: str) -> Any:
    """``name`` asked until its own tier answers; that answer."""
    first = await p.predict(name, ROW)
    assert first.reason == Reason.LOADING
    await until(lambda: not p.loader._pending)
    return await p.predict(name, ROW)


async def test_a_model_is_loaded_in_the_helper_and_answers_as_if_loaded_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "failsoft.tiers.loader")
    path = lr_portfolio(tmp_path, ["hot", "cold"])
    async with Portfolio.from_toml(path) as p:
        answer = await loaded(p, "cold")
        assert answer.tier == "cpu" and not answer.degraded
        helper = p.loader.helper
        assert helper.loads == 1 and helper.pid not in (None, os.getpid())
        assert os.sched_getscheduler(helper.pid) == os.SCHED_IDLE, "it runs on the CPU left over"
        own = joblib.load(tmp_path / "models" / "cold.joblib")
        assert answer.outputs == own.predict_proba(np.array([[0.9, 0.1]]))[0, 1]
        hot, cold = (next(m.chain[0] for m in p.describe() if m.name == n) for n in ("hot", "cold"))
        assert cold.compiled and cold.inline, "compiled as the helper proved it, on the event loop"
        assert cold.single_row_us > 0 and hot.compiled, "its costs as the helper measured them"
        assert '"model": "cold"' in caplog.text and '"loaded_by": "helper"' in caplog.text


async def test_a_load_that_ends_the_helper_fails_and_the_next_starts_a_new_one(tmp_path: Path) -> None:
    path = lr_portfolio(tmp_path, ["hot", "ok", "exits", "next"])
    joblib.dump(Exits(), tmp_path / "models" / "exits.joblib")
    async with Portfolio.from_toml(path) as p:
        await p.predict("ok", ROW)
        await until(lambda: p.loader.loads == 1)
        first_helper = p.loader.helper.pid
        answer = await loaded(p, "exits")
        assert p.loader.failures == 1 and answer.tier == "default" and answer.reason == Reason.ERROR
        assert "ended the load helper" in answer.skips[0].detail
        assert (await p.predict("ok", ROW)).tier == "cpu", "the serving process and its models are untouched"
        after = await loaded(p, "next")
        assert after.tier == "cpu" and p.loader.helper.pid not in (None, first_helper), "a new helper"


async def test_a_model_that_cannot_be_pickled_is_loaded_here(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "failsoft.tiers.loader")
    path = lr_portfolio(tmp_path, ["hot", "locked"])
    x = np.random.default_rng(0).uniform(0, 1, (200, 2))
    joblib.dump(Locked().fit(x, (x[:, 0] > x[:, 1]).astype(int)), tmp_path / "models" / "locked.joblib")
    async with Portfolio.from_toml(path) as p:
        answer = await loaded(p, "locked")
        assert answer.tier == "cpu" and answer.outputs > 0.5
        assert p.loader.helper.loads == 0 and p.loader.loads == 1
        assert '"loaded_by": "this process"' in caplog.text


async def test_a_helper_killed_between_loads_is_started_again_and_the_next_load_does_not_fail(
    tmp_path: Path,
) -> None:
    path = lr_portfolio(tmp_path, ["hot", "a", "b"])
    async with Portfolio.from_toml(path) as p:
        assert (await loaded(p, "a")).tier == "cpu"
        helper = p.loader.helper
        killed = helper.pid
        assert killed is not None and helper.proc is not None
        os.kill(killed, signal.SIGKILL)  # from outside: an operator, the OOM killer
        await until(lambda: helper.proc is not None and helper.proc.returncode is not None)
        assert (await loaded(p, "b")).tier == "cpu" and p.loader.failures == 0
        assert helper.pid not in (None, killed) and helper.loads == 2


class Slow:
    """A model file that takes ``seconds`` to load (in whichever process loads it)."""

    def __init__(self, model: Any, seconds: float) -> None:
        self.blob, self.seconds = pickle.dumps(model), seconds

    def __reduce__(self) -> tuple[Any, ...]:
        return unpickled_slowly, (self.seconds, self.blob)


async def test_a_helper_that_gets_no_cpu_leaves_the_loads_to_this_process_for_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "failsoft.tiers")
    path = lr_portfolio(tmp_path, ["hot", "slow", "next"])
    x = np.random.default_rng(0).uniform(0, 1, (200, 2))
    fitted = LogisticRegression().fit(x, (x[:, 0] > x[:, 1]).astype(int))
    joblib.dump(Slow(fitted, 1.0), tmp_path / "models" / "slow.joblib")
    monkeypatch.setattr(helper_module, "PATIENCE_S", 0.2)
    monkeypatch.setattr(helper_module, "cpu_seconds", lambda pid: 1.0)  # as if it never got a core
    async with Portfolio.from_toml(path) as p:
        assert (await loaded(p, "slow")).tier == "cpu", "loaded in this process once the helper starved"
        assert p.loader.helper.starved == 1 and p.loader.helper.proc is None and p.loader.failures == 0
        assert '"event": "load_helper_starved"' in caplog.text
        assert (await loaded(p, "next")).tier == "cpu"
        assert p.loader.helper.loads == 0 and p.loader.helper.proc is None, "the next, too, for a while"
