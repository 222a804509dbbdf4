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
import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from failsoft import config
from failsoft.audit.notify import Notifier
from failsoft.audit.watch import Watch
from failsoft.build import Builder, refresh_features
from failsoft.chain import Chain, Listener, RequestIds
from failsoft.config import PortfolioSpec
from failsoft.introspect import ModelInfo, describe, gauges
from failsoft.lag import LoopLag
from failsoft.listeners import logged
from failsoft.metrics import Metrics
from failsoft.monitor.health import HealthService
from failsoft.monitor.online import Monitors
from failsoft.reload import (
    Change,
    Follower,
    build_started,
    file_digest,
    files,
    plan,
    read,
    record,
    retire,
    start_chains,
)
from failsoft.resilience import Clock
from failsoft.shadow.mirror import Mirror, Shadowed
from failsoft.store import ModelState, Store, open_store
from failsoft.store.audits import AuditQueue
from failsoft.store.labels import Labels
from failsoft.store.log_client import ProcessLog, log_options
from failsoft.store.shadow import ShadowRecords
from failsoft.tasks import LoopThread, stop
from failsoft.types import Health, Outcome

__all__ = ["Portfolio"]

log = logging.getLogger("failsoft.portfolio")


class Portfolio:
    """The models of one spec: their chains, and the services around them (health, the prediction log,
    monitors, mirror, audit watch), started and stopped together."""

    def __init__(
        self, spec: PortfolioSpec, clock: Clock = time.monotonic, log_socket: str | None = None
    ) -> None:
        self.spec = spec
        # the shared log writer of ``failsoft serve --workers N`` (None: a writer of this process's own)
        self.log_socket = log_socket
        self.metrics = Metrics(spec.server.latency_histograms)
        self.ids = RequestIds()
        # this process, as episodes and shadow counters name it
        self.replica = f"{os.uname().nodename}-{os.getpid()}"
        self.clock = clock
        builder = Builder(spec, self.metrics, clock)
        self.skip_log = builder.skip_log
        self.chains: dict[str, Chain] = builder.chains()
        self.path = Path(spec.base_dir) / spec.file
        self.digest = file_digest(self.path)  # the file's SHA-256 (None: built from no file)
        # the model files each model was built from (a file written again makes a reload replace it)
        self.files = {name: files(spec, m) for name, m in spec.models.items()}
        self.loader = builder.loader  # in-process tiers loaded on first use
        # feature table -> its online lookup (only tables some model reads)
        self.online = builder.online
        self.store_url = spec.store_url()
        self.state_store: Store = open_store(self.store_url)
        self.audits = AuditQueue(self.state_store)
        self.health = HealthService(self.chains, self.state_store, self.audits, spec.store.poll_ms / 1000)
        # a reload another replica made: this one reloads its own file when it is the same
        self.health.after_sync = Follower(
            self.state_store, self.path, self.reload, lambda: self.digest, lambda: self.health.revision
        )
        self.notifier = Notifier()
        audit_tables = {f"models.{m}.audit": ms.audit for m, ms in spec.models.items() if ms.audit}
        self.notifier.check(spec.file, {"audit": spec.audit, **audit_tables})
        self.watch = Watch(spec, self.chains, self.metrics, self.audits, self.notifier, self.replica)
        self.monitors = Monitors(spec, self.health, Labels(self.state_store))
        self.log: ProcessLog | None = None
        self.mirror: Mirror | None = None
        self.lag = LoopLag()
        self.started = False
        self._refresher: asyncio.Task[None] | None = None
        self._sync: LoopThread | None = None  # the synchronous face's own event loop
        self._subscribers: list[Listener] = []  # given every answer too (subscribe)
        self._listeners: dict[str, tuple[Listener, ...]] = {}  # each model's own (the log, its monitor...)
        self._reloading = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self.metrics.gauges += [
            lambda: gauges(self.chains, self.online, self.notifier),
            self.lag.metrics,
            self.loader.metrics,
        ]
        if self.monitors.models:
            self.metrics.gauges.append(self.monitors.gauges)

    @classmethod
    def from_toml(cls, path: str | Path) -> Portfolio:
        return cls(config.load(path))

    def subscribe(self, listener: Listener) -> None:
        """Give ``listener`` every answer of every model from the next start on (after the log, the
        monitor and the mirror); it runs on the request path, so it copies what it keeps and returns."""
        self._subscribers.append(listener)

    # ---- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load models, open connections, compute safe defaults, open the store (serving starts even when the
        database is down: the log spills and state is polled until it answers). Raises ConfigError on a bad
        file or model."""
        if self.started:
            return
        # every tier started, its model loaded in a thread (unless on first use); a person's pinned defaults
        await start_chains(self.chains.values(), await self.health.pinned_defaults())
        self.loader.warm()
        for online in self.online.values():
            await asyncio.to_thread(online.load)
        if self.online:
            self._refresher = asyncio.create_task(
                refresh_features(self.online, self.spec.features.refresh_s), name="failsoft-feature-refresh"
            )
        await self.health.start()
        listeners: dict[str, list[Listener]] = {name: [] for name in self.chains}
        store = self.spec.store
        if store.log_predictions:
            data = self.spec.resolve(self.spec.data_dir)
            self.log = ProcessLog(
                self.spec.log_url(),
                data / "spill",
                max_buffer=store.max_buffer,
                log_inputs=store.log_inputs,
                journal_dir=data / "journal" if store.journal else None,
                socket=self.log_socket,
                **log_options(store),
            )
            await self.log.start()
            for name in self.chains:
                listeners[name].append(logged(self.log.records))
            self.metrics.gauges.append(self.log.metrics)
        for name, mon in self.monitors.models.items():
            listeners[name].append(mon.observe)
        shadowed = [Shadowed(c.model, c.version, c.schema.names, c.bad_output, tuple(c.eligible.values()))
                    for c in self.chains.values()]  # fmt: skip
        if any(len(s.eligible) > 1 for s in shadowed):
            write = self.log.records.append if self.log is not None else None
            sh = self.spec.shadow
            self.mirror = Mirror(shadowed, write, ShadowRecords(self.state_store), self.replica, sh.queue,
                                 sh.max_batch, sh.linger_ms / 1000)  # fmt: skip
            await self.mirror.start()
            for name, intake in self.mirror.intakes.items():
                listeners[name].append(intake.listen)
        for name, chain in self.chains.items():
            chain.listen((*listeners[name], *self._subscribers))
        self._listeners = {name: tuple(ls) for name, ls in listeners.items()}
        await self.notifier.start()
        await self.watch.start()
        await self.monitors.start()
        self.lag.start()
        self.started = True

    async def close(self) -> None:
        for task in list(self._retiring):
            await stop(task)
        await self.lag.close()
        await self.monitors.close()
        await self.watch.close()
        await self.notifier.close()
        await self.health.close()
        await stop(self._refresher)
        self._refresher = None
        for chain in self.chains.values():
            chain.listen(())
        if self.mirror is not None:
            mirror, self.mirror = self.mirror, None
            await mirror.close()
        self.loader.close()
        for chain in self.chains.values():
            for tier in chain.all_tiers():
                await tier.backend.close()
            await chain.default.close()
        if self.log is not None:
            log, self.log = self.log, None
            await log.stop()
            self.metrics.gauges.remove(log.metrics)
        await asyncio.to_thread(self.state_store.close)
        self.started = False

    async def reload(self, spec: PortfolioSpec | None = None, actor: str = "api") -> Change:
        """Change the models to those of ``spec`` (default: this portfolio's file read again) while
        serving; see failsoft/reload.py. Raises ConfigError, changing nothing, for a file that is wrong or
        a change that needs a restart. One reload at a time."""
        async with self._reloading:
            digest = None
            if spec is None:
                spec, digest = await asyncio.to_thread(read, self.path)
            assert spec is not None
            change = await asyncio.to_thread(plan, self.spec, spec, self.files)  # a stat a model file
            fresh, online = await build_started(spec, change, self.metrics, self.clock, self.loader,
                                                self.skip_log, self.online)  # fmt: skip
            for name, chain in fresh.items():
                self._listeners[name] = (logged(self.log.records),) if self.log is not None else ()
                chain.listen((*self._listeners[name], *self._subscribers))
            old = [self.chains[name] for name in [*change.removed, *change.replaced]]
            # the one step every request sees whole: a request already running keeps its chain
            for name in change.removed:
                del self.chains[name]
                self._listeners.pop(name, None)
            self.chains.update(fresh)
            self.spec, self.online = spec, online
            self.files = {**self.files, **{name: files(spec, spec.models[name]) for name in fresh}}
            for name in change.removed:
                self.files.pop(name, None)
            self.watch.follow(spec)
            self.health.revision = -1  # the store's health, deployments and defaults for the new chains
            await self.health.sync()
            if old:
                self._retiring.add(asyncio.create_task(retire(old, self.loader), name="failsoft-retire"))
            # this replica's file now, before the announcement can be seen (it is not this one's to follow)
            announce, self.digest = (None if digest == self.digest else digest), digest or self.digest
        await record(self.audits, self.state_store, change, actor, spec.file, announce)  # and announced
        return change

    async def set_health(
        self, model: str, health: Health | str, reason: str = "", actor: str = "api"
    ) -> ModelState:
        """Change a model's health for every replica (see ``HealthService.set_health``)."""
        return await self.health.set_health(model, health, reason, actor)

    async def __aenter__(self) -> Portfolio:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- predicting -------------------------------------------------------------------------------------

    def chain(self, model: str) -> Chain:
        return self.health.chain(model)

    def describe(self) -> list[ModelInfo]:
        """Every model with its chain, each tier's counters and breaker, its health and features."""
        return describe(self.chains, self.metrics)

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
        self._sync = LoopThread("failsoft-loop")
        self._sync.run(self.start())
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sync is not None:
            sync, self._sync = self._sync, None
            sync.stop(self.close())

    def predict_sync(
        self, model: str, inputs: dict[str, Any] | list[dict[str, Any]], id: str | None = None
    ) -> Outcome:
        """``predict`` for synchronous code; use the portfolio as a context manager (``with``) first."""
        if self._sync is None:
            raise RuntimeError("use `with Portfolio.from_toml(...) as p:` before predict_sync")
        return self._sync.run(self.predict(model, inputs, id))
