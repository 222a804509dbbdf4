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
import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from failsoft import config
from failsoft.audit.notify import Notifier
from failsoft.audit.queue import AuditQueue
from failsoft.audit.watch import Watch
from failsoft.chain import Chain, Layout, RequestIds, SkipLog, Tier
from failsoft.config import (
    AuditSpec,
    CandidateSpec,
    DefaultTierSpec,
    FeatureUseSpec,
    ModelSpec,
    OipTierSpec,
    PortfolioSpec,
    PythonTierSpec,
)
from failsoft.errors import ConfigError, UnknownModel
from failsoft.features.online import FeatureLookup, OnlineTable
from failsoft.features.store import FeatureStore
from failsoft.lag import LoopLag
from failsoft.metrics import Metrics
from failsoft.monitor.online import Monitors
from failsoft.resilience import Breaker, BreakerPolicy, BreakerState, Bulkhead, Clock
from failsoft.schema import InputSchema, OutputCheck
from failsoft.shadow.deploy import load_deployments
from failsoft.shadow.mirror import Mirror
from failsoft.store import ModelState, Store, StoreUnavailable, open_store
from failsoft.store.process import ProcessLog
from failsoft.tasks import stop
from failsoft.tiers import Backend, DefaultBackend, HttpBackend, OipBackend, PythonBackend
from failsoft.types import Health, Outcome

__all__ = ["Portfolio"]

log = logging.getLogger("failsoft.portfolio")

_STATE_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class Portfolio:
    def __init__(self, spec: PortfolioSpec, clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.clock = clock
        self.metrics = Metrics()
        self.metrics.gauges.append(self._gauges)
        self.ids = RequestIds()
        # this process, as episodes and shadow counters name it
        self.replica = f"{os.uname().nodename}-{os.getpid()}"
        self.skip_log = SkipLog(clock)
        # model -> the tiers that may be its primary (the first of the chain and its candidates), by name
        self.pools: dict[str, dict[str, Tier]] = {}
        self._rest: dict[str, list[Tier]] = {}
        self.mirror: Mirror | None = None
        # feature table -> its online lookup (only tables some model reads)
        self.online: dict[str, OnlineTable] = {}
        self._refresher: asyncio.Task[None] | None = None
        self.chains: dict[str, Chain] = {name: self._build(name, m) for name, m in spec.models.items()}
        self.store_url = spec.store_url()
        self.state_store: Store = open_store(self.store_url)
        self.log: ProcessLog | None = None
        self.revision = 0
        self._poller: asyncio.Task[None] | None = None
        self._store_warned = False
        self.audits = AuditQueue(self.state_store)
        self.notifier = Notifier()
        audit_tables = {f"models.{m}.audit": ms.audit for m, ms in spec.models.items() if ms.audit}
        self.notifier.check(spec.file, {"audit": spec.audit, **audit_tables})
        self.watch = Watch(self)
        self.monitors = Monitors(self)
        for name, mon in self.monitors.models.items():
            self.chains[name].monitor = mon.observe
        if self.monitors.models:
            self.metrics.gauges.append(self.monitors.gauges)
        # model -> when its "keep it out" period ends (set by the audit action)
        self.kept_out: dict[str, float] = {}
        self.lag = LoopLag()
        self.metrics.gauges.append(self.lag.metrics)
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
            tiers.append(self._tier(t, model, types, key))
        assert default is not None  # config guarantees the chain ends with a default
        candidates = [
            self._tier(c, model, types, f"models.{name}.candidates[{i}]")
            for i, c in enumerate(model.candidates)
        ]
        pool = {t.name: t for t in [*tiers[:1], *candidates]}
        self.pools[name] = pool
        self._rest[name] = tiers[1:]
        chain = Chain(
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
        chain.lookups = tuple(self._lookup(name, i, use) for i, use in enumerate(model.features))
        chain.layout = Layout(tiers, tuple(candidates))
        return chain

    def _tier(self, t: CandidateSpec, model: ModelSpec, types: dict[str, str], key: str) -> Tier:
        spec = self.spec
        backend: Backend
        if isinstance(t, PythonTierSpec):
            backend = PythonBackend(t, tuple(model.inputs), spec.resolve, spec.file, key)
        elif isinstance(t, OipTierSpec):
            backend = OipBackend(t, types)
        else:
            backend = HttpBackend(t)
        b = t.breaker
        policy = BreakerPolicy(b.window, b.min_calls, b.failure_rate, b.open_ms / 1000.0, b.half_open_probes)
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

    def deploy(self, model: str, live: str) -> bool:
        """Make ``live`` the model's primary and the other eligible tiers its shadow candidates, in one
        swap (a request sees the old layout or the new one). False when ``live`` is not eligible."""
        chain = self.chain(model)
        pool = self.pools[model]
        primary = pool.get(live)
        if primary is None:
            return False
        if chain.tiers and chain.tiers[0] is primary:
            return True
        others = tuple(t for n, t in pool.items() if n != live)
        chain.layout = Layout([primary, *self._rest[model]], others)
        log.warning(json.dumps({"event": "primary_changed", "model": model, "primary": live,
                                "candidates": [t.name for t in others]}))  # fmt: skip
        return True

    def _lookup(self, model: str, i: int, use: FeatureUseSpec) -> FeatureLookup:
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

    async def _refresh_features(self, every_s: float) -> None:
        """Reload an online table when new rows landed (a new file, or held-back rows became available)."""
        while True:
            await asyncio.sleep(every_s)
            for online in self.online.values():
                try:
                    if await asyncio.to_thread(online.due):
                        await asyncio.to_thread(online.load)
                except Exception:  # keep serving the last good values
                    log.exception("reloading feature table %s failed; serving its last values", online.name)

    # ---- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load models, open connections, compute safe defaults, open the store (serving starts even when the
        database is down: the log spills and state is polled until it answers). Raises ConfigError on a bad
        file or model."""
        if self.started:
            return
        # Defaults a person pinned come first: a replica whose source and disk copy are gone starts from them.
        try:
            shared = {(d.model, d.tier): d for d in await asyncio.to_thread(self.state_store.load_defaults)}
        except StoreUnavailable:
            shared = {}
        started: list[Any] = []
        try:
            for name, chain in self.chains.items():
                for tier in [*self.pools[name].values(), *self._rest[name]]:
                    await tier.backend.start()
                    started.append(tier.backend)
                if (pinned := shared.get((name, chain.default.name))) is not None:
                    chain.default.adopt(pinned)
                await chain.default.start()
                started.append(chain.default)
        except BaseException:
            # a model that fails to load: what was opened before it (sessions, threads) is closed, not leaked
            for backend in reversed(started):
                with contextlib.suppress(Exception):
                    await backend.close()
            raise
        for online in self.online.values():
            await asyncio.to_thread(online.load)
        if self.online:
            self._refresher = asyncio.create_task(
                self._refresh_features(self.spec.features.refresh_s), name="failsoft-feature-refresh"
            )
        await self._sync_state()
        store = self.spec.store
        if store.log_predictions:
            self.log = ProcessLog(
                self.store_url,
                self.spec.resolve(self.spec.data_dir) / "spill",
                batch_size=store.batch_size,
                flush_s=store.flush_ms / 1000,
                max_buffer=store.max_buffer,
                retention_s=store.retention_days * 86400 or None,
                log_inputs=store.log_inputs,
                spill_max_bytes=store.spill_max_mb << 20,
                journal_dir=self.spec.resolve(self.spec.data_dir) / "journal" if store.journal else None,
            )
            await self.log.start()
            for chain in self.chains.values():
                chain.sink = self.log.append
            self.metrics.gauges.append(self.log.metrics)
        if any(len(pool) > 1 for pool in self.pools.values()):
            shadow = self.spec.shadow
            self.mirror = Mirror(self, shadow.queue, shadow.max_batch)
            await self.mirror.start()
        self._poller = asyncio.create_task(self._poll(store.poll_ms / 1000), name="failsoft-state-poll")
        await self.notifier.start()
        await self.watch.start()
        await self.monitors.start()
        self.lag.start()
        self.started = True

    async def close(self) -> None:
        await self.lag.close()
        await self.monitors.close()
        await self.watch.close()
        await self.notifier.close()
        await stop(self._poller)
        self._poller = None
        await stop(self._refresher)
        self._refresher = None
        if self.mirror is not None:
            mirror, self.mirror = self.mirror, None
            await mirror.close()
        for name, chain in self.chains.items():
            chain.sink = None
            for tier in [*self.pools[name].values(), *self._rest[name]]:
                await tier.backend.close()
            await chain.default.close()
        if self.log is not None:
            log, self.log = self.log, None
            await log.stop()
            self.metrics.gauges.remove(log.metrics)
        await asyncio.to_thread(self.state_store.close)
        self.started = False

    # ---- humans in the loop ---------------------------------------------------------------------------

    def audit_spec(self, model: str) -> AuditSpec:
        return self.spec.models[model].audit or self.spec.audit

    async def end_keep_out(self, now: float) -> None:
        """Bring back models whose "keep it out" period is over (recorded like any action)."""
        for model, until in list(self.kept_out.items()):
            if now >= until:
                del self.kept_out[model]
                await self.set_health(model, Health.LIVE, "keep-out period over", "failsoft")
                await asyncio.to_thread(self.audits.record, None, model, "keep_out_ended", "failsoft")

    # ---- shared state (health), agreed through the store ---------------------------------------------

    async def _poll(self, every_s: float) -> None:
        """Apply shared state changes: at once when the store says one was made (PostgreSQL's NOTIFY, heard
        by a thread of its own), else at the next poll."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        stopping = threading.Event()

        def changed() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to wake
                loop.call_soon_threadsafe(wake.set)

        listener = threading.Thread(
            target=self.state_store.listen,
            args=(changed, stopping),
            name="failsoft-state-listen",
            daemon=True,
        )
        listener.start()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), every_s)
                wake.clear()
                await self._sync_state()
        finally:
            stopping.set()

    async def _sync_state(self) -> None:
        """Apply state changes made by any replica since the last look."""
        try:
            revision = await asyncio.to_thread(self.state_store.state_revision)
            if revision == self.revision:
                return
            states = await asyncio.to_thread(self.state_store.load_states)
            deployments = await asyncio.to_thread(load_deployments, self.state_store)
            defaults = await asyncio.to_thread(self.state_store.load_defaults)
        except StoreUnavailable as err:
            if not self._store_warned:
                self._store_warned = True
                log.warning(json.dumps({"event": "state_store_unavailable", "error": str(err)[:300]}))
            return
        self._store_warned = False
        for state in states.values():
            self._apply(state)
        for model, live in deployments.items():
            if model in self.chains and not self.deploy(model, live):
                log.warning(json.dumps({"event": "deployment_ignored", "model": model, "primary": live,
                                        "why": "not a tier or candidate in portfolio.toml"}))  # fmt: skip
        for shared in defaults:
            chain = self.chains.get(shared.model)
            if chain is not None and chain.default.name == shared.tier and chain.default.adopt(shared):
                await asyncio.to_thread(chain.default.refresh)  # unpinned elsewhere: back to the source
        self.revision = revision

    def _apply(self, state: ModelState) -> None:
        chain = self.chains.get(state.model)
        if chain is None:
            return
        new = Health(state.health)
        if chain.health is new:
            return
        if new is Health.LIVE:
            for tier in chain.tiers:
                tier.breaker.reset()
        log.warning(
            json.dumps(
                {
                    "event": "health_changed",
                    "model": state.model,
                    "from": str(chain.health),
                    "to": str(new),
                    "reason": state.reason,
                    "by": state.changed_by,
                }
            )
        )
        chain.health = new
        chain.health_reason = state.reason

    async def replace_default(self, model: str, value: Any, actor: str, reason: str = "") -> None:
        """A person's value becomes the model's safe default on every replica, pinned (no refresh from the
        source replaces it) until a person asks for a refresh. Raises ValueError when the output check
        refuses it, StoreUnavailable when it cannot be recorded (nothing is changed then)."""
        default = self.chain(model).default
        if (problem := default.problem(value)) is not None:
            raise ValueError(problem)
        text = json.dumps(value)
        shared = await asyncio.to_thread(
            self.state_store.set_default, model, default.name, text, True, actor, reason
        )
        default.adopt(shared)

    async def refresh_default(self, model: str, actor: str, reason: str = "") -> bool:
        """Recompute the model's default from its source now, and unpin it on every replica (each then
        reads its source again). False when the source cannot give a good value (nothing is changed)."""
        default = self.chain(model).default
        before = (default.value, default.refreshed_at, default.origin)
        if not await asyncio.to_thread(default.refresh, True):
            return False
        try:
            shared = await asyncio.to_thread(
                self.state_store.set_default,
                model,
                default.name,
                json.dumps(default.value),
                False,
                actor,
                reason,
            )
        except StoreUnavailable:
            default.value, default.refreshed_at, default.origin = before  # a change made nowhere else
            raise
        default.adopt(shared)
        return True

    async def set_health(
        self, model: str, health: Health | str, reason: str = "", actor: str = "api"
    ) -> ModelState:
        """Change a model's health for every replica (quarantine, restore). Raises StoreUnavailable when the
        change cannot be recorded: a change other replicas would never see is not made at all."""
        self.chain(model)
        value = Health(health)
        state = await asyncio.to_thread(self.state_store.set_health, model, value.value, reason, actor)
        self._apply(state)
        return state

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
                    "features": [
                        {
                            "table": use.online.name,
                            "columns": list(use.columns),
                            "max_age_s": use.max_age_s,
                            "entities": len(use.online.values),
                            "newest_age_s": use.online.newest_age_s(),
                            "lag_s": use.online.lag.get("lag_s"),
                        }
                        for use in chain.lookups
                    ],
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
        default_age = GaugeMetricFamily(
            "failsoft_default_age_seconds",
            "Seconds since a model's safe default was last computed or set by a person",
            labels=["model", "tier"],
        )
        pinned = GaugeMetricFamily(
            "failsoft_default_pinned", "1 while a model's safe default is a person's pinned value",
            labels=["model", "tier"],
        )  # fmt: skip
        now = time.time()
        for name, chain in self.chains.items():
            d = chain.default
            if d.refreshed_at is not None:
                default_age.add_metric([name, d.name], max(0.0, now - d.refreshed_at))
            pinned.add_metric([name, d.name], float(d.pinned))
        n = self.notifier
        webhooks = CounterMetricFamily(
            "failsoft_webhook_deliveries", "Audit webhook deliveries by outcome", labels=["outcome"]
        )
        for outcome, count in (("sent", n.sent), ("failed", n.failed), ("dropped", n.dropped)):
            webhooks.add_metric([outcome], count)
        metrics: list[Metric] = [state, flight, default_age, pinned, webhooks]
        if self.online:
            lag = GaugeMetricFamily(
                "failsoft_feature_lag_seconds",
                "available_at - event_time over a table's last day of rows (p50, p95, max)",
                labels=["table", "stat"],
            )
            age = GaugeMetricFamily(
                "failsoft_feature_newest_age_seconds",
                "Seconds since a feature table's newest value landed",
                labels=["table"],
            )
            entities = GaugeMetricFamily(
                "failsoft_feature_entities", "Entities held by a table's online lookup", labels=["table"]
            )
            for name, online in self.online.items():
                for stat, value in online.lag.get("lag_s", {}).items():
                    lag.add_metric([name, stat], value)
                if (newest := online.newest_age_s()) is not None:
                    age.add_metric([name], newest)
                entities.add_metric([name], len(online.values))
            metrics += [lag, age, entities]
        return iter(metrics)
