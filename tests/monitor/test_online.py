"""The online monitor inside a real Portfolio: windows of live requests judged against the profile, the
model quarantined to its fallback after drifted windows (other models untouched), recovery, a profile
learned from live traffic, labels joined by request id, data quality, metrics and config errors."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from failsoft import Health, Portfolio, Reason
from failsoft.config import MonitorSpec, OutputSpec
from failsoft.errors import ConfigError
from failsoft.labels import Label, save_labels
from failsoft.monitor.judge import Judges
from failsoft.monitor.model import ModelMonitor
from failsoft.monitor.profile import Column, Profile, build
from failsoft.validation import Batch
from tests.helpers import until
from tests.portfolios import default_tier, model, python_tier, toml


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> list[dict[str, Any]]:
    xs = np.clip(rng.normal(5.0 + shift, 1.5, n), 0, 10)
    plans = rng.choice(["free", "pro", "team"], n, p=[0.5, 0.3, 0.2])
    return [{"x": float(x), "plan": str(p)} for x, p in zip(xs, plans, strict=True)]


@pytest.fixture
def profile_path(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    ref = rows(rng, 5000)
    xs = np.array([r["x"] for r in ref])
    scores = np.minimum(1.0, xs / 10.0)
    labels = (rng.uniform(size=len(xs)) < scores).astype(float)
    cols = {
        "x": Column("x", "numeric", xs),
        "plan": Column("plan", "categorical", np.array([r["plan"] for r in ref], dtype=object)),
        "score": Column("score", "numeric", scores),
        "y": Column("y", "numeric", labels),
    }
    path = tmp_path / "profiles" / "churn.json"
    build(cols, ["x", "plan"], score="score", target="y").save(path)
    return path


def portfolio(
    write_toml: Callable[[str], Path], tmp_path: Path, monitor: dict[str, Any], min_span_s: float = 0
) -> Portfolio:
    """``churn`` is monitored (``monitor`` adds to its policy); ``other`` is not."""
    # every request kept (no sampling): these tests count windows by the requests they send
    policy = {"window_rows": 100, "window_s": 60, "warn_after": 1, "quarantine_after": 2, "recover_after": 2,
              "min_span_s": min_span_s, "max_rows_per_s": 0, **monitor}  # fmt: skip
    heavy = python_tier("heavy", "tests.helpers:score")
    churn = model(
        heavy,
        default_tier(0.2, name="base-rate"),
        inputs=("x", {"name": "plan", "type": "string"}),
        output={"type": "float", "min": 0, "max": 1},
        deadline_ms=500,
        monitor=policy,
    )
    other = model(heavy, default_tier(0.5))
    text = toml({"churn": churn, "other": other}, data_dir=str(tmp_path / "state"), store={"poll_ms": 100})
    return Portfolio.from_toml(write_toml(text))


async def window(p: Portfolio, batch: list[dict[str, Any]], prefix: str = "r") -> None:
    """Send one window of requests and wait until the monitor has judged it."""
    mon = p.monitors.models["churn"]
    before = mon.settled
    for i, row in enumerate(batch):
        await p.predict("churn", row, id=f"{prefix}-{before}-{i}")
    await until(lambda: mon.settled > before)


async def test_a_quarantine_needs_drift_over_time_not_just_rows(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    """600 anonymous in-range requests quarantined a monitored model in 4 s: rows are cheap to send."""
    rng = np.random.default_rng(2)
    async with portfolio(write_toml, tmp_path, {"profile": str(profile_path)}, min_span_s=600) as p:
        chain = p.chain("churn")
        mon = p.monitors.models["churn"]
        for _ in range(4):
            await window(p, rows(rng, 100, shift=3.0))
        assert chain.health is Health.WARNING and mon.bad == 4, "four drifted windows, but seconds apart"
        mon.bad_since -= 600  # the same drift, seen for ten minutes
        await window(p, rows(rng, 100, shift=3.0))
        assert chain.health is Health.QUARANTINED and "5 window(s) in a row over" in chain.health_reason


async def test_drift_quarantines_the_model_alone_and_clean_windows_restore_it(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    rng = np.random.default_rng(1)
    async with portfolio(write_toml, tmp_path, {"profile": str(profile_path)}) as p:
        chain = p.chain("churn")
        await window(p, rows(rng, 100))
        assert chain.health is Health.LIVE
        await window(p, rows(rng, 100, shift=3.0))
        assert chain.health is Health.WARNING
        await window(p, rows(rng, 100, shift=3.0))
        assert chain.health is Health.QUARANTINED and chain.health_reason.startswith("monitor: drift")
        out = await p.predict("churn", {"x": 5.0, "plan": "pro"})
        assert out.tier == "base-rate" and out.reason is Reason.QUARANTINED
        other = await p.predict("other", {"x": 5.0})
        assert other.tier == "heavy" and not other.degraded
        report = p.monitors.report("churn")
        assert report is not None
        last = report.windows[0]
        assert last["verdict"] == "drift" and last["drifted"] == ["x", "prediction"]  # the score follows x
        x = last["features"]["x"]
        assert x["psi"] > x["psi_critical"] and x["p_adjusted"]["ks"] < 0.01 and x["drift"]
        assert not last["features"]["plan"]["drift"]
        assert [t["to"] for t in report.transitions] == ["warning", "quarantined"]
        # the quarantined model is still watched (its inputs still arrive): clean windows bring it back
        await window(p, rows(rng, 100))
        assert chain.health is Health.QUARANTINED
        await window(p, rows(rng, 100))
        assert chain.health is Health.LIVE
        assert (await p.predict("churn", {"x": 5.0, "plan": "pro"})).tier == "heavy"
        events = p.state_store.state_events("churn")
        assert [e.value for e in events][:3] == ["live", "quarantined", "warning"]  # newest first
        text = generate_latest(p.metrics.registry).decode()
        assert 'failsoft_monitor_windows_total{model="churn",verdict="drift"} 2.0' in text
        assert 'failsoft_drift_psi{feature="x",model="churn"}' in text


async def test_manual_recovery_waits_for_a_person(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    rng = np.random.default_rng(2)
    monitor = {"profile": str(profile_path), "recovery": "manual"}
    async with portfolio(write_toml, tmp_path, monitor) as p:
        chain = p.chain("churn")
        for _ in range(2):
            await window(p, rows(rng, 100, shift=-3.0))
        assert chain.health is Health.QUARANTINED
        for _ in range(3):
            await window(p, rows(rng, 100))
        assert chain.health is Health.QUARANTINED
        await p.set_health("churn", Health.LIVE, "checked the feed", "alice")
        await window(p, rows(rng, 100, shift=-3.0))  # counting starts again after a person's change
        assert chain.health is Health.WARNING


async def test_a_person_s_quarantine_is_not_lifted_by_the_monitor(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    rng = np.random.default_rng(3)
    async with portfolio(write_toml, tmp_path, {"profile": str(profile_path)}) as p:
        await p.set_health("churn", Health.QUARANTINED, "upstream incident", "alice")
        for _ in range(3):
            await window(p, rows(rng, 100))
        assert p.chain("churn").health is Health.QUARANTINED


async def test_labels_give_realized_performance_beside_the_estimate(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    rng = np.random.default_rng(4)
    async with portfolio(write_toml, tmp_path, {"profile": str(profile_path)}) as p:
        batch = rows(rng, 100)
        await window(p, batch, prefix="lab")
        closed = p.monitors.models["churn"].history[-1]
        assert closed.report["estimated"]["roc_auc"] > 0.5 and closed.report["realized"] is None
        ids = sorted(closed.answered)
        truth = {rid: float(rng.uniform() < closed.answered[rid]) for rid in ids}
        # late and out of order, some sent twice, one for a request that never existed
        labels = [Label(rid, truth[rid]) for rid in reversed(ids)] + [Label(ids[0], truth[ids[0]])]
        await asyncio.to_thread(save_labels, p.state_store, [*labels, Label("nope", 1.0)])
        await p.monitors.poll_labels()
        report = closed.report
        assert report["labelled"] == 100
        ys = np.array([truth[r] for r in ids])
        scores = np.array([closed.answered[r] for r in ids])
        from sklearn.metrics import roc_auc_score

        assert report["realized"]["roc_auc"] == pytest.approx(roc_auc_score(ys, scores), abs=1e-5)
        assert report["realized"]["accuracy"] == pytest.approx(((scores >= 0.5) == (ys == 1)).mean())


async def test_invalid_requests_are_a_quality_alarm(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    rng = np.random.default_rng(5)
    async with portfolio(write_toml, tmp_path, {"profile": str(profile_path)}) as p:
        for _ in range(30):
            out = await p.predict("churn", {"x": "not a number", "plan": "pro"})
            assert out.reason is Reason.INVALID_INPUT
        await window(p, rows(rng, 100))
        report = p.monitors.report("churn")
        assert report is not None
        assert report.windows[0]["verdict"] == "quality"
        assert report.windows[0]["quality"] == ["invalid_input"]


async def test_profile_learned_from_the_first_live_requests(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    rng = np.random.default_rng(6)
    async with portfolio(write_toml, tmp_path, {"learn_rows": 200}) as p:
        mon = p.monitors.models["churn"]
        assert p.monitors.report("churn").state == "learning"  # type: ignore[union-attr]
        for row in rows(rng, 200):
            await p.predict("churn", row)
        await until(lambda: mon.profile is not None)
        learned = tmp_path / "state" / "profiles" / "churn.learned.json"
        assert Profile.load(learned).rows == 200
        await window(p, rows(rng, 100, shift=3.0))
        assert p.chain("churn").health is Health.WARNING
    async with portfolio(write_toml, tmp_path, {"learn_rows": 200}) as p:  # a restart keeps the profile
        assert p.monitors.models["churn"].profile is not None


@pytest.mark.parametrize(
    ("monitor", "key", "words"),
    [
        (
            {"profile": "x.json", "learn_rows": 5},
            "models.churn.monitor",
            "exactly one of profile and learn_rows",
        ),
        ({"k": 5}, "models.churn.monitor", "exactly one of profile and learn_rows"),
        ({"profile": "missing.json"}, "models.churn.monitor.profile", "no such profile"),
        ({"profile": 3}, "models.churn.monitor.profile", "Expected `str"),
    ],
)
def test_config_errors_name_the_key(
    tmp_path: Path, write_toml: Callable[[str], Path], monitor: dict[str, Any], key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        portfolio(write_toml, tmp_path, monitor)
    assert err.value.key == key and words in str(err.value)


def test_a_profile_of_other_features_is_refused(tmp_path: Path, write_toml: Callable[[str], Path]) -> None:
    path = tmp_path / "wrong.json"
    build({"age": Column("age", "numeric", np.arange(100.0))}, ["age"]).save(path)
    with pytest.raises(ConfigError) as err:
        portfolio(write_toml, tmp_path, {"profile": str(path)})
    assert err.value.key == "models.churn.monitor.profile" and "age" in str(err.value)


def sampled_monitor(cap: float, seed: int = 7) -> ModelMonitor:
    spec = MonitorSpec(window_rows=1_000_000, max_rows_per_s=cap)
    return ModelMonitor(
        "m", spec, {"x": "numeric"}, OutputSpec(type="float"), None, Path("unused"), seed=seed
    )


def answer(i: int, n: int = 1) -> Any:
    batch = Batch(("x",), [{"x": float(i)}] * n)
    batch.values = [(float(i),)] * n
    return SimpleNamespace(batch=batch, primary=[0.5] * n, outcome=SimpleNamespace(id=f"r{i}"))


def test_a_busy_model_is_watched_from_a_random_sample_of_its_requests() -> None:
    """Past max_rows_per_s rows a second, each request is kept with the same chance; the rate is read once
    a second on the monitor's clock (injected here), so the test needs no real time."""
    mon = sampled_monitor(cap=1000)
    now = mon._rate_at
    for i in range(20_000):  # the first second, 20,000 requests: all kept (the rate is not known yet)
        mon.observe(answer(i))
    assert mon.window.rows == 20_000 and mon.share == 1.0
    mon.resample(now + 1.0)  # 20,000 rows a second seen: keep 1 in 20
    assert mon.share == pytest.approx(0.05)
    before = mon.window.rows
    kept_ids = []
    for i in range(20_000, 220_000):
        mon.observe(answer(i))
        if mon.window.rows > before + len(kept_ids):
            kept_ids.append(i)
    kept = len(kept_ids)
    assert 9_400 < kept < 10_600, kept  # 200,000 x 0.05 = 10,000 (binomial sd 97)
    gaps = np.diff(kept_ids)
    assert gaps.mean() == pytest.approx(20, rel=0.05) and gaps.min() >= 1 and gaps.max() > 100  # random
    assert mon.seen == 220_000
    w = mon.take()
    assert w.seen_before == 220_000 and w.requests == 20_000 + kept
    mon.resample(now + 11.0)  # 200,000 in the last 10 s
    assert mon.share == pytest.approx(1000 / 20_000)
    mon.resample(now + 21.0)  # quiet: nothing seen in 10 s, every request kept again
    assert mon.share == 1.0 and mon._skip == 0
    mon.observe(answer(0))
    assert mon.window.rows == 1


def test_sampling_counts_rows_for_batches_and_can_be_turned_off() -> None:
    mon = sampled_monitor(cap=1000)
    now = mon._rate_at
    for i in range(200):  # 200 requests of 50 rows: 10,000 rows a second
        mon.observe(answer(i, n=50))
    mon.resample(now + 1.0)
    assert mon.share == pytest.approx(0.1)
    off = sampled_monitor(cap=0)
    for i in range(50_000):
        off.observe(answer(i))
    off.resample(off._rate_at + 1.0)
    assert off.share == 1.0 and off.window.rows == 50_000


async def test_windows_are_judged_in_a_process_of_their_own_and_a_dead_one_is_replaced(
    tmp_path: Path, write_toml: Callable[[str], Path], profile_path: Path
) -> None:
    """Judging never holds the serving process's interpreter; a judging process killed mid-run costs
    nothing: that window is judged in a thread, the next in a new process."""
    rng = np.random.default_rng(3)
    async with portfolio(write_toml, tmp_path, {"profile": str(profile_path)}) as p:
        judges = p.monitors.judges
        await window(p, rows(rng, 100, shift=3.0))
        assert judges.judged_there == 1 and judges.judged_here == 0
        [first] = judges.pids()
        assert first != os.getpid()
        os.kill(first, signal.SIGKILL)
        await window(p, rows(rng, 100, shift=3.0))
        await window(p, rows(rng, 100, shift=3.0))
        assert judges.judged_here == 1 and judges.judged_there == 2
        assert judges.pids() and judges.pids() != [first]
        assert p.chain("churn").health is Health.QUARANTINED  # every window counted, wherever judged


def test_the_judging_process_loads_numpy_and_scipy_when_it_starts_not_at_the_first_window() -> None:
    """Loading them takes a second or two of CPU: at start, not in the middle of traffic."""
    judges = Judges()
    try:
        pool = judges.start()  # its first call, already queued, imports the judging code
        loaded = pool.submit(eval, "sorted({'numpy', 'scipy.stats'} & set(__import__('sys').modules))")
        assert loaded.result(timeout=120) == ["numpy", "scipy.stats"]
    finally:
        judges.close()
