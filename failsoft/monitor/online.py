"""The online monitor: per model, windows of live requests judged against the reference profile, and the
model's health moved by them (``live -> warning -> quarantined`` and back).

The request path only appends the request's values and the primary's answer to the open window (bounded:
past it, requests are dropped and counted; past ``max_rows_per_s``, a random sample of requests). A
background task closes the window after ``window_rows`` requests, or after ``window_s`` once it holds
``min_rows``, and judges it in a process of its own (``failsoft.monitor.judge``): drift and data quality
(``failsoft.monitor.drift``), estimated performance for a calibrated binary classifier. Labels sent later
(``POST /v1/labels``) are joined to the kept windows by request id and give their realized performance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from failsoft.config import PortfolioSpec
from failsoft.errors import ConfigError
from failsoft.monitor.health import HealthService
from failsoft.monitor.judge import Judges
from failsoft.monitor.model import Closed, ModelMonitor, MonitorReport
from failsoft.monitor.profile import Profile, ProfileError
from failsoft.store import StoreUnavailable
from failsoft.store.labels import Labels
from failsoft.tasks import stop
from failsoft.types import Health

log = logging.getLogger("failsoft.monitor")

ACTOR = "monitor"
LABEL_POLL_S = 5.0


class Monitors:
    """The monitors of a portfolio's models and the one background task that runs them."""

    def __init__(
        self, spec: PortfolioSpec, health: HealthService, labels: Labels, tick_s: float = 0.2
    ) -> None:
        self.health = health
        self.labels = labels
        self.tick_s = tick_s
        self.models: dict[str, ModelMonitor] = {}
        for name, model in spec.models.items():
            mon = model.monitor
            if mon is None:
                continue
            key = f"models.{name}.monitor.profile"
            learned = spec.resolve(spec.data_dir) / "profiles" / f"{name}.learned.json"
            profile = None
            if mon.profile is not None:
                profile = _load(spec.file, key, spec.resolve(mon.profile))
            elif learned.exists():
                profile = _load(spec.file, key, learned)
            kinds = {
                f.name: "categorical" if f.type in {"string", "bool"} else "numeric" for f in model.inputs
            }
            if profile is not None:
                unknown = [f for f in profile.features if f not in kinds]
                if unknown:
                    raise ConfigError(
                        spec.file,
                        key,
                        f"the profile describes {', '.join(unknown)}, not inputs of {name}",
                        "rebuild it with `failsoft profile DATA --portfolio FILE --model NAME`",
                    )
            self.models[name] = ModelMonitor(name, mon, kinds, model.output, profile, learned)
        self._task: asyncio.Task[None] | None = None
        self.judges = Judges()
        self._last_labels = 0.0
        self._label_mark = time.time() - 86400.0  # labels of requests older than a day are not in memory

    async def start(self) -> None:
        if self.models:
            self.judges.start()
            self._task = asyncio.create_task(self._run(), name="failsoft-monitor")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None
        self.judges.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except Exception:  # the monitor is never in the request path; it must go on
                log.exception("monitor tick failed")

    async def tick(self) -> None:
        now = time.monotonic()
        for mon in self.models.values():
            mon.resample(now)
            if not mon.due(now):
                continue
            w = mon.take()
            if mon.profile is None:
                await asyncio.to_thread(mon.learn, w)
                continue
            judged = await self.judges.report(mon.model, mon.profile, mon.spec, mon.sample(w))
            closed = mon.closed(w, judged)
            await self._health(mon, closed)
            mon.settled += 1
        if now - self._last_labels >= LABEL_POLL_S:
            self._last_labels = now
            await self.poll_labels()

    async def _health(self, mon: ModelMonitor, closed: Closed) -> None:
        chain = self.health.chain(mon.model)
        by_monitor = chain.health is Health.LIVE or chain.health_reason.startswith("monitor:")
        change = mon.verdict(closed, chain.health, by_monitor)
        closed.report["health"] = str(chain.health)
        if change is None:
            return
        health, why = change
        if not by_monitor:
            return  # a person (or the audit queue) set this health: only a person changes it back
        try:
            await self.health.set_health(mon.model, health, f"monitor: {why}", ACTOR)
        except StoreUnavailable as err:
            log.warning(json.dumps({"event": "monitor_health_unrecorded", "model": mon.model,
                                    "to": str(health), "error": str(err)[:200]}))  # fmt: skip
            return
        closed.report["health"] = str(health)
        mon.last_health = health
        mon.transitions.append(
            {"at": time.time(), "to": str(health), "why": why, "window": closed.report["window"]}
        )

    async def poll_labels(self) -> None:
        """Read the labels received since the last look (an indexed range, so the cost follows the labels
        that arrive, not the requests kept) and join them to every monitor's windows."""
        try:
            found, self._label_mark = await asyncio.to_thread(self.labels.since, self._label_mark)
        except StoreUnavailable:
            return
        if not found:
            return
        for mon in self.models.values():
            await asyncio.to_thread(mon.add_labels, found)

    def report(self, model: str) -> MonitorReport | None:
        mon = self.models.get(model)
        if mon is None:
            return None
        chain = self.health.chain(model)
        return mon.describe(chain.health, chain.health_reason)

    def gauges(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        windows = CounterMetricFamily(
            "failsoft_monitor_windows", "Windows judged, by verdict", labels=["model", "verdict"]
        )
        psi = GaugeMetricFamily(
            "failsoft_drift_psi", "PSI of the last judged window per feature", labels=["model", "feature"]
        )
        drifted = GaugeMetricFamily(
            "failsoft_drift_detected",
            "1 when the feature drifted in the last window",
            labels=["model", "feature"],
        )
        perf = GaugeMetricFamily(
            "failsoft_monitor_performance",
            "Performance of the latest window that has it (kind: estimated | realized)",
            labels=["model", "kind", "metric"],
        )
        dropped = CounterMetricFamily(
            "failsoft_monitor_dropped", "Requests not monitored (the monitor fell behind)", labels=["model"]
        )
        kept = GaugeMetricFamily(
            "failsoft_monitor_kept_share",
            "The chance a request goes into the monitor's window (below 1 past max_rows_per_s)",
            labels=["model"],
        )
        for name, mon in self.models.items():
            for verdict, n in mon.verdicts.items():
                windows.add_metric([name, verdict], n)
            dropped.add_metric([name], mon.dropped)
            kept.add_metric([name], mon.share)
            if not mon.history:
                continue
            last = mon.history[-1].report
            for feature, s in last["features"].items():
                psi.add_metric([name, feature], s["psi"])
                drifted.add_metric([name, feature], float(s["drift"]))
            for kind in ("estimated", "realized"):
                rep = next((c.report[kind] for c in reversed(mon.history) if c.report[kind]), None)
                for metric, value in (rep or {}).items():
                    perf.add_metric([name, kind, metric], value)
        return iter([windows, psi, drifted, perf, dropped, kept])


def _load(file: str, key: str, path: Path) -> Profile:
    try:
        return Profile.load(path)
    except ProfileError as err:
        fix = "build it with `failsoft profile DATA --model NAME -o FILE`"
        raise ConfigError(file, key, str(err), fix) from None
