"""run = "process": a model that spins or dies in a worker process cannot starve the other models."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from failsoft import Portfolio, Reason
from tests.portfolios import default_tier, model, python_tier, write


def build(write_toml: Callable[[str], Path], tmp_path: Path, target: str) -> Portfolio:
    breaker = {"window": 10, "min_calls": 5, "failure_rate": 0.5, "open_ms": 200}
    isolated = python_tier(
        "iso", f"tests.helpers:{target}", run="process", processes=2, timeout_ms=40, breaker=breaker
    )
    models = {
        "stuck": model(isolated, default_tier(0.5)),
        "healthy": model(python_tier("py", "tests.helpers:score"), default_tier(0.5)),
    }
    return Portfolio.from_toml(write(tmp_path, models, store={"log_predictions": False}))


async def ready(p: Portfolio, timeout_s: float = 60.0, model: str = "stuck") -> None:
    pool = p.chains[model].tiers[0].backend._pool  # type: ignore[attr-defined]
    end = time.monotonic() + timeout_s
    while len(pool._idle) < pool.size:
        assert time.monotonic() < end, "the workers did not come back"
        await asyncio.sleep(0.05)


async def test_a_worker_process_answers_like_the_model(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    async with build(write_toml, tmp_path, "spin") as p:
        o = await p.predict("stuck", {"x": 3.0})
        assert (o.tier, o.degraded, o.outputs) == ("iso", False, 0.3)
        batch = await p.predict("stuck", [{"x": 1.0}, {"x": 2.0}])
        assert batch.outputs == [0.1, 0.2]
        [tier] = [t for m in p.describe() if m.name == "stuck" for t in m.chain if t.name == "iso"]
        assert tier.run == "process" and tier.processes == 2 and not tier.can_hold_interpreter


async def test_a_spinning_model_leaves_the_others_their_deadline(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    """With threads, 17 calls stuck in pure Python put healthy models' p99 at 0.8-1.2 s until restart."""
    async with build(write_toml, tmp_path, "spin") as p:
        healthy: list[float] = []
        stuck = []

        async def spinners() -> None:
            for _ in range(30):
                stuck.append(await p.predict("stuck", {"x": 9.0}))

        async def traffic() -> None:
            for i in range(300):
                o = await p.predict("healthy", {"x": i % 10})
                assert o.tier == "py"
                healthy.append(o.latency_ms)
                await asyncio.sleep(0.002)

        await asyncio.gather(spinners(), spinners(), traffic())
        healthy.sort()
        # the gateway's own measured latency; the deadline is 60 ms
        assert healthy[int(0.99 * len(healthy))] < 60, healthy[-10:]
        reasons = {o.skips[0].reason for o in stuck}
        assert all(o.tier == "default" for o in stuck) and Reason.TIMEOUT in reasons
        assert reasons <= {Reason.TIMEOUT, Reason.OVERLOADED, Reason.CIRCUIT_OPEN}
        pool = p.chains["stuck"].tiers[0].backend._pool  # type: ignore[attr-defined]
        assert pool.killed >= 1
        await ready(p)
        await asyncio.sleep(0.25)  # past the breaker's open_ms
        o = await p.predict("stuck", {"x": 2.0})
        assert (o.tier, o.outputs) == ("iso", 0.2), "replaced workers answer again"


async def test_a_worker_that_dies_is_replaced(tmp_path: Path, write_toml: Callable[[str], Path]) -> None:
    async with build(write_toml, tmp_path, "die") as p:
        o = await p.predict("stuck", {"x": 9.0})
        assert o.tier == "default" and o.skips[0].reason is Reason.ERROR and "died" in o.skips[0].detail
        await ready(p)
        o = await p.predict("stuck", {"x": 1.0})
        assert (o.tier, o.outputs) == ("iso", 0.25)


async def test_a_model_that_cannot_load_names_the_key(
    tmp_path: Path, write_toml: Callable[[str], Path]
) -> None:
    from failsoft.errors import ConfigError

    p = build(write_toml, tmp_path, "no_such_model")
    try:
        await p.start()
        raise AssertionError("started")
    except ConfigError as err:
        assert "models.stuck.tiers[0].target" in str(err) and "no_such_model" in str(err)
    finally:
        await p.close()


async def test_a_model_growing_its_memory_is_stopped_by_its_limit_not_the_oom_killer(tmp_path: Path) -> None:
    """max_memory_mb: past it the worker's call fails (the default answers, reason error, MemoryError said)
    and the worker is replaced by a fresh one, which answers again; the serving process never grew."""
    from failsoft.tiers.loader import resident_bytes

    leaky = python_tier("iso", "tests.helpers:grow", run="process", processes=1, max_memory_mb=400,
                        timeout_ms=5000, breaker={"window": 50, "min_calls": 50})  # fmt: skip
    path = write(tmp_path, {"leaky": model(leaky, default_tier(0.1), deadline_ms=6000)},
                 store={"log_predictions": False})  # fmt: skip
    async with Portfolio.from_toml(path) as p:
        before = resident_bytes()
        answers = [await p.predict("leaky", {"x": 1.0}) for _ in range(12)]
        failed = [a for a in answers if a.degraded]
        assert failed and failed[0].reason == Reason.ERROR and "MemoryError" in failed[0].skips[0].detail
        await ready(p, model="leaky")
        assert (await p.predict("leaky", {"x": 1.0})).tier == "iso", "a fresh worker answers again"
        assert resident_bytes() - before < 100 << 20, "the memory was the worker's, never the server's"


def test_a_worker_failing_call_after_call_is_replaced_ever_more_slowly() -> None:
    from failsoft.tiers.pool import backoff_s

    assert [backoff_s(n) for n in range(1, 9)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
