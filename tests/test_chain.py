"""The tier walk, in process and without a Portfolio (no store, no log writer, no state poll): every reason,
the deadline bound (asserted exactly with an injected clock), breakers, bulkheads, quarantine."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from failsoft import Health, Outcome, Portfolio, Reason, config
from failsoft.build import Builder
from failsoft.chain import Chain, Tier
from failsoft.errors import UnknownModel
from failsoft.metrics import Metrics
from failsoft.resilience import Breaker, Bulkhead
from failsoft.resilience.breaker import BreakerPolicy
from failsoft.tiers.base import Backend
from failsoft.validation import Batch, InputSchema, OutputCheck
from tests import helpers
from tests.portfolios import BREAKER, default_tier, model, python_tier, toml


class Models:
    """The chains of a portfolio file, started on their own: what a tier walk needs and nothing else."""

    def __init__(self, path: Path) -> None:
        spec = config.load(path)
        self.metrics = Metrics()
        self.chains = Builder(spec, self.metrics).chains()

    async def start(self) -> None:
        for chain in self.chains.values():
            for tier in chain.all_tiers():
                await tier.backend.start()
            await chain.default.start()

    async def close(self) -> None:
        for chain in self.chains.values():
            for tier in chain.all_tiers():
                await tier.backend.close()
            await chain.default.close()

    async def predict(self, model: str, inputs: Any) -> Outcome:
        chain = self.chains.get(model)
        if chain is None:
            raise UnknownModel(model, list(self.chains))
        if isinstance(inputs, list):
            return await chain.run(inputs, "r")
        return await chain.run([inputs], "r", single=True)


Make = Callable[..., Awaitable[Models]]


def chain_toml(
    *targets: str,
    deadline_ms: int = 200,
    timeout_ms: int = 40,
    concurrency: int = 4,
    first: dict[str, Any] | None = None,
    **tier_keys: dict[str, Any],
) -> str:
    """``m``: a python tier ``t<i>`` per target (``tier_keys["t1"]`` adds keys to t1), after ``first`` if
    given, then a default of 0.25."""
    guard = {"timeout_ms": timeout_ms, "max_concurrency": concurrency, "breaker": BREAKER}
    tiers = [
        python_tier(f"t{i}", f"tests.helpers:{t}", **guard, **tier_keys.get(f"t{i}", {}))
        for i, t in enumerate(targets)
    ]
    if first is not None:
        tiers.insert(0, first)
    output = {"type": "float", "min": 0, "max": 1}
    inputs = ({"name": "x", "min": 0, "max": 10},)
    m = model(*tiers, default_tier(0.25), inputs=inputs, output=output, deadline_ms=deadline_ms)
    return toml({"m": m})


@pytest.fixture
async def make(write_toml: Callable[[str], Path]) -> AsyncIterator[Make]:
    opened: list[Models] = []

    async def build(*targets: str, **kw: int) -> Models:
        p = Models(write_toml(chain_toml(*targets, **kw)))
        await p.start()
        opened.append(p)
        return p

    yield build
    helpers.RELEASE.set()
    for p in opened:
        await p.close()
    helpers.RELEASE.clear()


async def test_healthy_primary_answers(make: Make) -> None:
    p = await make("score", "score")
    o = await p.predict("m", {"x": 5})
    assert (o.tier, o.degraded, o.reason, o.outputs) == ("t0", False, None, 0.5)
    assert o.version == "1" and o.id and o.latency_ms < 50


@pytest.mark.parametrize(
    ("target", "reason"),
    [("boom", Reason.ERROR), ("garbage", Reason.INVALID_OUTPUT), ("hang", Reason.TIMEOUT)],
)
async def test_failures_fall_to_next_tier(make: Make, target: str, reason: Reason) -> None:
    p = await make(target, "score")
    o = await p.predict("m", {"x": 8})
    assert (o.tier, o.degraded, o.reason, o.outputs) == ("t1", True, reason, 0.8)
    assert [s.tier for s in o.skips] == ["t0"] and o.skips[0].detail


async def test_everything_fails_the_default_answers(make: Make) -> None:
    p = await make("boom", "garbage")
    o = await p.predict("m", {"x": 8})
    assert (o.tier, o.reason, o.outputs) == ("default", Reason.ERROR, 0.25)
    assert [s.reason for s in o.skips] == [Reason.ERROR, Reason.INVALID_OUTPUT]


@pytest.mark.parametrize("bad", [{"x": float("nan")}, {"x": "7"}, {"x": 11}, {}, {"x": None}])
async def test_corrupt_input_goes_straight_to_default(make: Make, bad: dict[str, object]) -> None:
    p = await make("score")
    before = helpers.CALLS["n"]
    o = await p.predict("m", bad)
    assert (o.tier, o.reason, o.outputs) == ("default", Reason.INVALID_INPUT, 0.25)
    assert helpers.CALLS["n"] == before, "no tier is called with corrupt input"


async def test_call_bounded_by_what_is_left_of_the_deadline(make: Make) -> None:
    p = await make("hang", "hang", deadline_ms=60, timeout_ms=40)
    o = await p.predict("m", {"x": 1})
    assert o.tier == "default" and [s.reason for s in o.skips] == [Reason.TIMEOUT, Reason.TIMEOUT]
    # the budgets each call was given, as recorded: t0 its 40 ms timeout less the 2 ms reserve, t1 only
    # what was left of the 60 ms (less the reserve): never its own 40 ms
    first, second = (float(re.search(r"within ([\d.]+) ms", s.detail).group(1)) for s in o.skips)  # type: ignore[union-attr]
    assert first == 38.0
    assert 0 < second <= 60 - 38 - 2


async def test_breaker_opens_and_no_call_is_made(make: Make) -> None:
    p = await make("boom", "score")
    for _ in range(4):
        assert (await p.predict("m", {"x": 1})).reason is Reason.ERROR
    tier = p.chains["m"].tiers[0]
    assert tier.breaker.state.value == "open"
    o = await p.predict("m", {"x": 1})
    assert o.reason is Reason.CIRCUIT_OPEN and o.tier == "t1"
    assert p.metrics.skips[("m", "t0", "circuit_open")] == 1
    await asyncio.sleep(0.31)
    assert (await p.predict("m", {"x": 1})).reason is Reason.ERROR, "half-open lets one probe through"


async def test_bulkhead_full_skips_at_once_and_hung_threads_keep_their_slot(make: Make) -> None:
    p = await make("hang", "score", concurrency=1, timeout_ms=30)
    first = asyncio.create_task(p.predict("m", {"x": 1}))
    await asyncio.sleep(0.005)
    second = await p.predict("m", {"x": 2})
    # at once: the chain's own clock shows it did not wait for the 30 ms timeout
    assert second.reason is Reason.OVERLOADED and second.latency_ms < 25
    assert (await first).reason is Reason.TIMEOUT
    third = await p.predict("m", {"x": 3})
    assert third.reason is Reason.OVERLOADED, "the hung thread still holds the only slot"
    helpers.RELEASE.set()
    await asyncio.sleep(0.05)
    assert p.chains["m"].tiers[0].bulkhead.in_flight == 0


async def test_quarantined_model_skips_its_primary(make: Make) -> None:
    p = await make("score", "score")
    p.chains["m"].set_health(Health.QUARANTINED, "")
    o = await p.predict("m", {"x": 3})
    assert (o.tier, o.reason) == ("t1", Reason.QUARANTINED)


async def test_batch_answers_every_row(make: Make) -> None:
    p = await make("score")
    o = await p.predict("m", [{"x": 1}, {"x": 2}, {"x": 3}])
    assert o.outputs == [0.1, 0.2, 0.3]
    bad = await p.predict("m", [{"x": 1}, {"x": -2}])
    assert bad.outputs == [0.25, 0.25] and bad.reason is Reason.INVALID_INPUT


async def test_skips_are_counted_and_logged_once_folded(make: Make, caplog: pytest.LogCaptureFixture) -> None:
    p = await make("garbage", "score")
    with caplog.at_level(logging.INFO, logger="failsoft.chain"):
        for _ in range(3):
            await p.predict("m", {"x": 1})
    lines = [r.getMessage() for r in caplog.records if "tier_skipped" in r.getMessage()]
    assert len(lines) == 1 and '"reason": "invalid_output"' in lines[0] and '"request_id"' in lines[0]
    assert p.metrics.skips[("m", "t0", "invalid_output")] == 3
    assert p.metrics.answers[("m", "t1", "invalid_output")] == 3


async def test_unknown_model(make: Make) -> None:
    from failsoft.errors import UnknownModel

    p = await make("score")
    with pytest.raises(UnknownModel, match="serves m"):
        await p.predict("nope", {"x": 1})


@pytest.mark.timing
async def test_hanging_primary_leaves_a_reserve_for_the_fallback(write_toml: Callable[[str], Path]) -> None:
    text = chain_toml("hang", "score", deadline_ms=50, timeout_ms=500, t1={"run": "inline"})
    tries = []
    async with Portfolio.from_toml(write_toml(text)) as p:
        await asyncio.sleep(0.2)  # let start-up work (the log writer, the first state poll) settle
        # On a busy machine the loop may wake past the reserve, the deadline gone: up to ten tries, until the
        # inline t1 answers.
        for _ in range(10):
            t = time.perf_counter()
            o = await p.predict("m", {"x": 4})
            tries.append(((time.perf_counter() - t) * 1000, o))
            if o.tier == "t1":
                break
        helpers.RELEASE.set()
    helpers.RELEASE.clear()
    for _, o in tries:
        # t0 was given the deadline less the 2 ms reserve (and less what came before it), every time
        given = re.fullmatch(r"no answer within ([\d.]+) ms", o.skips[0].detail)
        assert given is not None and 45.0 <= float(given[1]) <= 48.0, o.skips[0].detail
        if o.tier == "t1":  # the inline t1 answered inside the reserve
            assert (o.reason, o.outputs) == (Reason.TIMEOUT, 0.4)
            assert o.latency_ms < 50 + 20, "the chain's own clock; a busy core may wake the loop late"
        else:  # only a wake-up past the deadline explains the default (the chain's own clock says so)
            assert o.tier == "default" and o.skips[1].detail == "no time left in the deadline"
            assert o.latency_ms >= 50, [(k.tier, k.reason, k.detail) for k in o.skips]
    assert all(e < 500 for e, _ in tries), "the test's clock, bounded for a loaded machine"


async def test_a_bug_in_the_chain_is_answered_by_the_default(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = await make("score")
    chain = p.chains["m"]

    def broken(rows: object) -> object:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(chain.schema, "validate", broken)
    o = await p.predict("m", {"x": 1})
    assert (o.tier, o.reason, o.outputs, o.degraded) == ("default", Reason.ERROR, 0.25, True)
    assert o.skips[0].tier == "chain" and "a bug of ours" in o.skips[0].detail
    assert p.metrics.answers[("m", "default", "error")] == 1, "counted like any answer"


async def test_numbers_beyond_a_float_are_invalid_input_and_never_open_a_breaker(
    write_toml: Callable[[str], Path], tmp_path: Path
) -> None:
    """An integer above 1.8e308 in an unbounded float feature passed the checks, the model raised
    OverflowError, and ten such requests opened a healthy primary's breaker for everyone."""
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    x = np.arange(40, dtype=float).reshape(20, 2)
    joblib.dump(LogisticRegression().fit(x, np.arange(20) % 2), tmp_path / "m.joblib")
    toml = f"""
trusted_model_dirs = ["{tmp_path}"]
data_dir = "{tmp_path / "state"}"
[models.m]
[[models.m.inputs]]
name = "a"
[[models.m.inputs]]
name = "b"
type = "int"
[[models.m.tiers]]
name = "lr"
kind = "python"
path = "{tmp_path / "m.joblib"}"
compile = false
breaker = {{ window = 10, min_calls = 4, failure_rate = 0.5, open_ms = 60000 }}
[[models.m.tiers]]
kind = "default"
value = 0.5
"""
    async with Portfolio.from_toml(write_toml(toml)) as p:
        for bad in ({"a": 10**400, "b": 1}, {"a": -(10**309), "b": 1}, {"a": 1.0, "b": 10**400}):
            for _ in range(6):
                o = await p.predict("m", bad)
                assert (o.tier, o.reason) == ("default", Reason.INVALID_INPUT), o
                assert "beyond a 64-bit float" in o.skips[0].detail
        assert p.chains["m"].tiers[0].breaker.state.value == "closed"
        o = await p.predict("m", {"a": 1e308, "b": 3})
        assert (o.tier, o.degraded) == ("lr", False)


async def test_values_a_tier_cannot_read_are_the_requests_fault_not_the_tiers() -> None:
    from failsoft.chain import guarded_call

    class ReadsMatrix(Backend):
        name = "matrix"

        async def call(self, batch: Batch, request_id: str) -> list[float]:
            return [float(v) for v in batch.matrix()[:, 0]]

    breaker = Breaker(BreakerPolicy(4, 2, 0.5, 60.0, 1))
    tier = Tier(ReadsMatrix(), breaker, Bulkhead(2), 1.0)
    bad = Batch(("a",), [{"a": "not a number"}])
    for _ in range(10):
        out, reason, detail = await guarded_call(tier, bad, "r", 1.0, lambda out, n: None)
        assert (out, reason) == (None, Reason.INVALID_INPUT) and "cannot be read as numbers" in detail
    assert breaker.state.value == "closed" and tier.bulkhead.in_flight == 0


async def test_a_batch_bigger_than_a_row_at_a_time_tier_takes_is_passed_by_uncharged(
    write_toml: Callable[[str], Path],
) -> None:
    """300 rows to a row-at-a-time http tier always timed out and opened its breaker for every client."""
    web = {"name": "web", "kind": "http", "url": "http://127.0.0.1:9/score", "pool_size": 8,
           "breaker": {"window": 10, "min_calls": 2, "failure_rate": 0.5, "open_ms": 60000}}  # fmt: skip
    toml = chain_toml("score", first=web)
    async with Portfolio.from_toml(write_toml(toml)) as p:
        for _ in range(5):
            o = await p.chains["m"].run([{"x": 1}] * 9, "r")
            assert o.tier == "t0" and o.skips[0].reason is Reason.OVERLOADED
            assert "max_rows (8)" in o.skips[0].detail
        web = p.chains["m"].tiers[0]
        assert web.name == "web" and web.breaker.state.value == "closed"


async def test_an_unknown_input_is_named_in_the_answer_and_counted(make: Make) -> None:
    """A misspelt feature was answered by the default without the unknown key being mentioned."""
    p = await make("score")
    o = await p.predict("m", {"xx": 4})  # the required x is missing: the default answers
    assert (o.tier, o.reason) == ("default", Reason.INVALID_INPUT)
    assert o.warnings == ("unknown input 'xx' (did you mean 'x'?): not used",)
    assert "x: required feature is missing; unknown input 'xx'" in o.skips[0].detail
    o = await p.predict("m", {"x": 4, "extra": 1})  # answered by its tier, the extra key reported
    assert o.tier == "t0" and o.warnings == ("unknown input 'extra': not used",)
    o = await p.predict("m", {"x": 4})
    assert o.warnings is msgspec.UNSET and b"warnings" not in msgspec.json.encode(o)
    assert p.metrics.unknown_inputs["m"] == 2


# ---- the deadline arithmetic, exactly: an injected clock and backends that spend its time --------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Spends(Backend):
    """Spends ``spend_s`` of the fake clock, then fails as a timeout would: its skip records the budget the
    chain gave it ("no answer within X ms")."""

    def __init__(self, name: str, clock: FakeClock, spend_s: float, answer: float | None = None) -> None:
        self.name, self.clock, self.spend_s, self.answer = name, clock, spend_s, answer
        self.budgets: list[float] = []

    async def predict(self, batch: Batch, request_id: str, done: Any) -> list[Any]:
        done()
        self.clock.now += self.spend_s
        if self.answer is None:
            raise TimeoutError
        return [self.answer] * len(batch)


def fake_chain(clock: FakeClock, deadline_s: float, *tiers: tuple[Spends, float]) -> Chain:
    from failsoft.config import DefaultTierSpec, FeatureSpec, OutputSpec
    from failsoft.tiers.defaults import DefaultBackend

    policy = BreakerPolicy(100, 100, 0.5, 1.0, 1)
    built = [Tier(b, Breaker(policy, clock), Bulkhead(4), timeout_s) for b, timeout_s in tiers]
    check = OutputCheck(OutputSpec(type="float"))
    default = DefaultBackend(DefaultTierSpec(value=0.25), "m", check, None, None, "t.toml", "key")
    default.value = 0.25
    schema = InputSchema((FeatureSpec(name="x"),))
    return Chain(
        "m", version="1", deadline_s=deadline_s, schema=schema, check=check, tiers=built, default=default,
        metrics=Metrics(), skip_log=helpers_skip_log(clock), clock=clock,
    )  # fmt: skip


def helpers_skip_log(clock: FakeClock) -> Any:
    from failsoft.skips import SkipLog

    return SkipLog(clock)


def budgets(outcome: Outcome) -> list[float]:
    found = (re.search(r"within ([\d.]+) ms", s.detail) for s in outcome.skips)
    return [float(m.group(1)) for m in found if m]


async def test_each_tier_gets_its_timeout_or_what_is_left_less_the_reserve() -> None:
    clock = FakeClock()
    a, b, c = Spends("a", clock, 0.030), Spends("b", clock, 0.015), Spends("c", clock, 0.0, answer=0.9)
    chain = fake_chain(clock, 0.050, (a, 0.030), (b, 0.040), (c, 0.040))
    o = await chain.run([{"x": 1.0}], "r", single=True)
    # a: its own 30 ms timeout less the 2 ms reserve; b: 50 - 30 = 20 ms left, less the reserve; c answers
    # with 50 - 45 = 5 ms left, less the reserve
    assert budgets(o) == [28.0, 18.0]
    assert (o.tier, o.outputs, o.reason) == ("c", 0.9, Reason.TIMEOUT)
    assert o.latency_ms == pytest.approx(45.0), "the latency is the chain's own clock"


async def test_a_tier_with_no_time_left_is_skipped_without_a_call() -> None:
    clock = FakeClock()
    a, b = Spends("a", clock, 0.049), Spends("b", clock, 0.0, answer=0.9)
    chain = fake_chain(clock, 0.050, (a, 0.100), (b, 0.100))
    o = await chain.run([{"x": 1.0}], "r", single=True)
    # a got the deadline less the reserve; 1 ms is left, less than the 2 ms reserve: b is never called
    assert budgets(o) == [48.0]
    assert [(s.tier, s.reason, s.detail) for s in o.skips][1] == (
        "b",
        Reason.TIMEOUT,
        "no time left in the deadline",
    )
    assert (o.tier, o.outputs) == ("default", 0.25)


async def test_a_short_deadline_keeps_a_tenth_of_itself_in_reserve() -> None:
    clock = FakeClock()
    a = Spends("a", clock, 0.010)
    chain = fake_chain(clock, 0.010, (a, 1.0))
    o = await chain.run([{"x": 1.0}], "r", single=True)
    assert budgets(o) == [9.0], "a 10 ms deadline keeps 1 ms, not 2, for the fallback"
