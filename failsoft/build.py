"""Building a portfolio's chains from its spec: tiers with their breakers and bulkheads, the safe default,
the shadow candidates, and the online feature lookups. Nothing here runs: ``Portfolio.start`` does."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from failsoft.chain import Chain, Tier
from failsoft.config import (
    CandidateSpec,
    DefaultTierSpec,
    FeatureUseSpec,
    ModelSpec,
    OipTierSpec,
    PortfolioSpec,
    PythonTierSpec,
    SageMakerTierSpec,
)
from failsoft.errors import ConfigError
from failsoft.features.online import FeatureLookup, OnlineTable
from failsoft.features.store import FeatureStore
from failsoft.metrics import Metrics
from failsoft.resilience import Breaker, BreakerPolicy, Bulkhead, Clock
from failsoft.skips import SkipLog
from failsoft.tiers import Backend, DefaultBackend, HttpBackend, OipBackend, PythonBackend, SageMakerBackend
from failsoft.tiers.loader import Loader
from failsoft.validation import InputSchema, OutputCheck

__all__ = ["Builder", "refresh_features"]

log = logging.getLogger("failsoft.portfolio")


class Builder:
    """Builds the chains of one spec; the online tables it opened are in ``online`` (one per table, shared
    by the models that read it)."""

    def __init__(
        self,
        spec: PortfolioSpec,
        metrics: Metrics,
        clock: Clock = time.monotonic,
        *,
        loader: Loader | None = None,
        skip_log: SkipLog | None = None,
        online: dict[str, OnlineTable] | None = None,
    ) -> None:
        """``loader``, ``skip_log``, ``online``: a serving portfolio's own, for the chains a reload adds."""
        self.spec = spec
        self.metrics = metrics
        self.clock = clock
        self.skip_log = skip_log or SkipLog(clock)
        self.online: dict[str, OnlineTable] = {} if online is None else online
        # in-process tiers loaded on first use, under the memory budget ([server] load, memory_budget_mb)
        self.loader = loader or Loader(spec.server.memory_budget_mb * 2**20, clock)

    def chains(self) -> dict[str, Chain]:
        return {name: self.chain(name, m) for name, m in self.spec.models.items()}

    def chain(self, name: str, model: ModelSpec) -> Chain:
        spec = self.spec
        check = OutputCheck(model.output)
        types: dict[str, str] = {f.name: f.type for f in model.inputs}
        tiers: list[Tier] = []
        default: DefaultBackend | None = None
        lazy = spec.server.load == "first_use" and not model.preload and not model.candidates
        for i, t in enumerate(model.tiers):
            key = f"models.{name}.tiers[{i}]"
            if isinstance(t, DefaultTierSpec):
                source = spec.resolve(t.source) if t.source else None
                cache = spec.resolve(spec.data_dir) / "defaults" / f"{name}.{t.name}.json"
                default = DefaultBackend(t, name, check, source, cache, spec.file, key)
                continue
            tier = self.tier(t, model, types, key)
            # loaded on first use: a serving tier of a model that is not preloaded and has no shadow
            # candidates (a candidate, or a tier that may become one, is called by the mirror)
            if lazy and isinstance(t, PythonTierSpec) and t.run != "process":
                assert isinstance(tier.backend, PythonBackend)
                tier.backend.make_lazy(name, self.loader)
            tiers.append(tier)
        assert default is not None  # config guarantees the chain ends with a default
        candidates = tuple(
            self.tier(c, model, types, f"models.{name}.candidates[{i}]")
            for i, c in enumerate(model.candidates)
        )
        return Chain(
            name,
            version=model.version,
            deadline_s=model.deadline_ms / 1000.0,
            schema=InputSchema(model.inputs),
            check=check,
            tiers=tiers,
            default=default,
            metrics=self.metrics,
            skip_log=self.skip_log,
            clock=self.clock,
            candidates=candidates,
            lookups=tuple(self.lookup(name, i, use) for i, use in enumerate(model.features)),
        )

    def tier(self, t: CandidateSpec, model: ModelSpec, types: dict[str, str], key: str) -> Tier:
        spec = self.spec
        backend: Backend
        if isinstance(t, PythonTierSpec):
            backend = PythonBackend(t, tuple(model.inputs), spec.resolve, spec.file, key)
        elif isinstance(t, OipTierSpec):
            backend = OipBackend(t, types)
        elif isinstance(t, SageMakerTierSpec):
            backend = SageMakerBackend(t, spec.file, key)
        else:
            backend = HttpBackend(t)
        b = t.breaker
        policy = BreakerPolicy(window=b.window, min_calls=b.min_calls, failure_rate=b.failure_rate,
                               open_s=b.open_ms / 1000.0, half_open_probes=b.half_open_probes)  # fmt: skip
        # a tier of worker processes takes one call per process at a time
        slots = t.processes if isinstance(t, PythonTierSpec) and t.run == "process" else t.max_concurrency
        return Tier(
            backend,
            Breaker(policy, self.clock),
            Bulkhead(slots),
            t.timeout_ms / 1000,
            t.sample,
            t.row_limit(),
        )

    def lookup(self, model: str, i: int, use: FeatureUseSpec) -> FeatureLookup:
        spec = self.spec
        key = f"models.{model}.features[{i}]"
        root = spec.resolve(spec.features.dir or str(Path(spec.data_dir) / "features"))
        online = self.online.get(use.table)
        if online is None:
            try:
                online = OnlineTable(FeatureStore(root), use.table)
            except ConfigError as err:
                raise ConfigError(spec.file, f"{key}.table", err.problem, err.fix) from None
            self.online[use.table] = online
        unknown = [c for c in use.columns or () if c not in online.columns]
        if unknown:
            raise ConfigError(
                spec.file,
                f"{key}.columns",
                f"{', '.join(unknown)} not in feature table {use.table}",
                f"it has: {', '.join(online.columns)}",
            )
        return FeatureLookup(online, use.columns, use.max_age_s)


async def refresh_features(online: dict[str, OnlineTable], every_s: float) -> None:
    """Reload an online table when new rows landed (a new file, or held-back rows became available)."""
    while True:
        await asyncio.sleep(every_s)
        for table in online.values():
            try:
                if await asyncio.to_thread(table.due):
                    await asyncio.to_thread(table.load)
            except Exception:  # keep serving the last good values
                log.exception("reloading feature table %s failed; serving its last values", table.name)
