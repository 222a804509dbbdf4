"""Portfolio: every model of one portfolio.toml, built once, answering ``predict``.

>>> portfolio = Portfolio.from_toml("portfolio.toml")          # doctest: +SKIP
>>> async with portfolio:                                      # doctest: +SKIP
...     outcome = await portfolio.predict("churn", {"tenure": 3, "spend": 41.5})
...     outcome.tier, outcome.degraded, outcome.outputs
('gbm', False, 0.27)

Synchronous code uses ``with Portfolio.from_toml(...) as p: p.predict_sync(...)``; the portfolio then runs
its own event loop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from failsoft import config
from failsoft.chain import Chain, RequestIds, SkipLog, Tier
from failsoft.config import (
    DefaultTierSpec,
    HttpTierSpec,
    ModelSpec,
    OipTierSpec,
    PortfolioSpec,
    PythonTierSpec,
)
from failsoft.errors import UnknownModel
from failsoft.metrics import Metrics
from failsoft.resilience import Breaker, BreakerPolicy, BreakerState, Bulkhead, Clock
from failsoft.schema import InputSchema, OutputCheck
from failsoft.tiers import Backend, DefaultBackend, HttpBackend, OipBackend, PythonBackend
from failsoft.types import Outcome

__all__ = ["Portfolio"]

_STATE_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class Portfolio:
    def __init__(self, spec: PortfolioSpec, clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.metrics = Metrics()
        self.metrics.gauges.append(self._gauges)
        self.ids = RequestIds()
        self.skip_log = SkipLog(clock)
        self.chains: dict[str, Chain] = {name: self._build(name, m) for name, m in spec.models.items()}
        self.started = False
        self._loop_thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> Portfolio:
        return cls(config.load(path))

    # ---- building ---------------------------------------------------------------------------------------

    def _build(self, name: str, model: ModelSpec) -> Chain:
        spec = self.spec
        check = OutputCheck(model.output)
        schema = InputSchema(model.inputs)
        types: dict[str, str] = {f.name: f.type for f in model.inputs}
        tiers: list[Tier] = []
        default: DefaultBackend | None = None
        for i, t in enumerate(model.tiers):
            key = f"models.{name}.tiers[{i}]"
            if isinstance(t, DefaultTierSpec):
                source = spec.resolve(t.source) if t.source else None
                cache = spec.resolve(spec.data_dir) / "defaults" / f"{name}.{t.name}.json"
                default = DefaultBackend(t, name, check, source, cache, spec.file, key)
                continue
            backend: Backend
            if isinstance(t, PythonTierSpec):
                backend = PythonBackend(t, tuple(model.inputs), spec.resolve, spec.file, key)
            elif isinstance(t, OipTierSpec):
                backend = OipBackend(t, types)
            elif isinstance(t, HttpTierSpec):
                backend = HttpBackend(t)
            b = t.breaker
            policy = BreakerPolicy(
                b.window, b.min_calls, b.failure_rate, b.open_ms / 1000.0, b.half_open_probes
            )
            tiers.append(
                Tier(backend, Breaker(policy, self.clock), Bulkhead(t.max_concurrency), t.timeout_ms / 1000)
            )
        assert default is not None  # config guarantees the chain ends with a default
        return Chain(
            name,
            model.version,
            model.deadline_ms / 1000.0,
            schema,
            check,
            tiers,
            default,
            self.metrics,
            self.skip_log,
            self.clock,
        )

    # ---- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load models, open connections, compute safe defaults. Raises ConfigError on a bad file or model."""
        if self.started:
            return
        for chain in self.chains.values():
            for tier in chain.tiers:
                await tier.backend.start()
            await chain.default.start()
        self.started = True

    async def close(self) -> None:
        for chain in self.chains.values():
            for tier in chain.tiers:
                await tier.backend.close()
            await chain.default.close()
        self.started = False

    async def __aenter__(self) -> Portfolio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- predicting -------------------------------------------------------------------------------------

    def chain(self, model: str) -> Chain:
        chain = self.chains.get(model)
        if chain is None:
            raise UnknownModel(model, list(self.chains))
        return chain

    async def predict(
        self, model: str, inputs: dict[str, Any] | list[dict[str, Any]], id: str | None = None
    ) -> Outcome:
        """Answer one row (a dict of feature values) or a batch (a list of them). Never raises for bad values:
        those are answered by the safe default with reason ``invalid_input``."""
        chain = self.chain(model)
        request_id = id or self.ids.next()
        if isinstance(inputs, list):
            return await chain.run(inputs, request_id)
        return await chain.run([inputs], request_id, single=True)

    # ---- synchronous use --------------------------------------------------------------------------------

    def __enter__(self) -> Portfolio:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._loop_thread = threading.Thread(target=loop.run_forever, name="failsoft-loop", daemon=True)
        self._loop_thread.start()
        asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = self._loop
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        if self._loop_thread is not None:
            self._loop_thread.join()
        loop.close()
        self._loop = None

    def predict_sync(
        self, model: str, inputs: dict[str, Any] | list[dict[str, Any]], id: str | None = None
    ) -> Outcome:
        """``predict`` for synchronous code; use the portfolio as a context manager (``with``) first."""
        if self._loop is None:
            raise RuntimeError("use `with Portfolio.from_toml(...) as p:` before predict_sync")
        return asyncio.run_coroutine_threadsafe(self.predict(model, inputs, id), self._loop).result()

    # ---- introspection ----------------------------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, chain in self.chains.items():
            tiers = []
            for t in chain.tiers:
                skips = {r: c for (m, tn, r), c in self.metrics.skips.items() if m == name and tn == t.name}
                answered = sum(
                    c for (m, tn, _), c in self.metrics.answers.items() if m == name and tn == t.name
                )
                tiers.append(
                    {
                        **t.backend.describe(),
                        "timeout_ms": t.timeout_s * 1000,
                        "breaker": {
                            "state": t.breaker.state.value,
                            "failure_share": t.breaker.failure_share(),
                            "times_opened": t.breaker.times_opened,
                            "retry_after_s": round(t.breaker.retry_after(), 3),
                        },
                        "in_flight": t.bulkhead.in_flight,
                        "max_concurrency": t.bulkhead.limit,
                        "answered": answered,
                        "skipped": skips,
                    }
                )
            d = chain.default
            answered = sum(c for (m, tn, _), c in self.metrics.answers.items() if m == name and tn == d.name)
            tiers.append({**d.describe(), "answered": answered})
            out.append(
                {
                    "name": name,
                    "version": chain.version,
                    "deadline_ms": chain.deadline_s * 1000,
                    "health": str(chain.health),
                    "inputs": [f.name for f in chain.schema.features],
                    "chain": tiers,
                }
            )
        return out

    def _gauges(self) -> Any:
        state = GaugeMetricFamily(
            "failsoft_breaker_state", "Breaker state: 0 closed, 1 half-open, 2 open", labels=["model", "tier"]
        )
        flight = GaugeMetricFamily(
            "failsoft_tier_in_flight", "Calls in flight per tier", labels=["model", "tier"]
        )
        for name, chain in self.chains.items():
            for t in chain.tiers:
                state.add_metric([name, t.name], _STATE_VALUE[t.breaker.state])
                flight.add_metric([name, t.name], t.bulkhead.in_flight)
        metrics: list[Metric] = [state, flight]
        return iter(metrics)
