"""The watch: per model, fallback episodes from the answers served, audit items when one lasts past
``after_s`` or the safe default grows older than ``default_max_age_s``, reminders, and the end of
"keep it out" periods. It runs off the request path, reading only counters the chain already keeps."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from failsoft.audit.notify import Notifier
from failsoft.chain import Chain
from failsoft.config import AuditSpec, PortfolioSpec
from failsoft.metrics import Metrics
from failsoft.resilience import BreakerState
from failsoft.store import StoreUnavailable
from failsoft.store.audits import AuditQueue
from failsoft.tasks import stop
from failsoft.types import Health

log = logging.getLogger("failsoft.audit")


@dataclass
class _Model:
    samples: collections.deque[tuple[float, int, int]] = field(default_factory=collections.deque)
    episode: int | None = None
    started_at: float = 0.0
    base: tuple[int, int, dict[str, int]] = (0, 0, {})
    audited: bool = False
    # after_s counts from here: the episode's start, or the moment a person resolved its last item
    audit_from: float = 0.0


class Watch:
    def __init__(
        self,
        spec: PortfolioSpec,
        chains: Mapping[str, Chain],
        metrics: Metrics,
        audits: AuditQueue,
        notifier: Notifier,
        replica: str,
        tick_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.chains = chains
        self.metrics = metrics
        self.audits = audits
        self.notifier = notifier
        self.tick_s = tick_s
        self.replica = replica
        self.models = {name: _Model() for name in chains}
        self._totals: dict[str, int] = {}
        self._reasons: dict[str, dict[str, int]] = {}
        self.started = time.time()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="failsoft-audit-watch")

    def follow(self, spec: PortfolioSpec) -> None:
        """The portfolio after a reload: new models watched from now on, removed ones forgotten."""
        self.spec = spec
        self.models = {name: self.models.get(name) or _Model() for name in spec.models}

    async def close(self) -> None:
        await stop(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except StoreUnavailable as err:
                log.warning(json.dumps({"event": "audit_watch_store_unavailable", "error": str(err)[:200]}))
            except Exception:  # the watch must go on; it is never in the request path
                log.exception("audit watch tick failed")

    def audit_spec(self, model: str) -> AuditSpec:
        return self.spec.models[model].audit or self.spec.audit

    def _tally(self) -> None:
        """Every model's answers and skip reasons so far, in one pass over the counters (a pass per model
        would cost the loop models x counters each tick: seconds at a thousand models)."""
        totals: dict[str, int] = {}
        reasons: dict[str, dict[str, int]] = {}
        for (m, _, _), c in list(self.metrics.answers.items()):
            totals[m] = totals.get(m, 0) + c
        for (m, _, r), c in list(self.metrics.skips.items()):
            mine = reasons.setdefault(m, {})
            mine[r] = mine.get(r, 0) + c
        self._totals, self._reasons = totals, reasons

    def _counts(self, model: str) -> tuple[int, int, dict[str, int]]:
        """A model's answers, degraded answers and skip reasons, as of the tick's tally."""
        return self._totals.get(model, 0), self.metrics.degraded.get(model, 0), self._reasons.get(model, {})

    def degraded_now(self, model: str, now: float) -> tuple[bool, float | None]:
        """Whether the model is in fallback now, and the degraded share over the window."""
        spec = self.audit_spec(model)
        chain = self.chains[model]
        state = self.models[model]
        total, degraded, _ = self._counts(model)
        state.samples.append((now, total, degraded))
        while len(state.samples) > 2 and state.samples[1][0] <= now - spec.window_s:
            state.samples.popleft()
        _, total0, degraded0 = state.samples[0]
        answers = total - total0
        share = (degraded - degraded0) / answers if answers >= max(1, spec.min_answers) else None
        primary_open = bool(chain.tiers) and chain.tiers[0].breaker.state is BreakerState.OPEN
        out = (
            chain.health is Health.QUARANTINED
            or primary_open
            or (share is not None and share > spec.degraded_share)
        )
        return out, share

    async def tick(self) -> None:
        """Every model judged; the episodes that start and the tallies of those under way written in one
        transaction each (hundreds at a time after traffic has cycled through a thousand models)."""
        now = time.time()
        audits = self.audits
        self._tally()
        live = [model for model in self.models if model in self.chains]  # not removed by a reload meanwhile
        judged = {model: self.degraded_now(model, now) for model in live}
        starting = [m for m in live if judged[m][0] and self.models[m].episode is None]
        if starting:
            ids = await asyncio.to_thread(audits.start_episodes, starting, self.replica, now)
            for model, episode in zip(starting, ids, strict=True):
                begun = self.models[model]
                begun.episode, begun.started_at, begun.base = episode, now, self._counts(model)
                begun.audited, begun.audit_from = False, now
                said = {"event": "fallback_episode_started", "model": model, "share": judged[model][1]}
                log.warning(json.dumps(said))
        updates: list[tuple[int, dict[str, int], int, int, float | None]] = []
        for model in live:
            state = self.models.get(model)
            if state is None or model not in self.chains:
                continue  # removed by a reload meanwhile
            degraded = judged[model][0]
            total, deg, reasons = self._counts(model)
            if state.episode is not None:
                b_total, b_deg, b_reasons = state.base
                delta = {
                    r: c - b_reasons.get(r, 0) for r, c in reasons.items() if c - b_reasons.get(r, 0) > 0
                }
                ended = None if degraded else now
                updates.append((state.episode, delta, total - b_total, deg - b_deg, ended))
                if ended is not None:
                    log.warning(
                        json.dumps(
                            {
                                "event": "fallback_episode_ended",
                                "model": model,
                                "lasted_s": round(now - state.started_at, 1),
                            }
                        )
                    )
                    state.episode = None
                elif state.audited:
                    # a person resolved the item but the model is still in fallback: ask again after_s later
                    if await asyncio.to_thread(audits.open_for, model, "fallback") is None:
                        state.audited, state.audit_from = False, now
                elif now - state.audit_from >= self.audit_spec(model).after_s:
                    state.audited = True
                    answers = max(1, total - b_total)
                    await self.open_item(
                        model,
                        "fallback",
                        {
                            "episode_id": state.episode,
                            "since": state.started_at,
                            "reasons": delta,
                            "degraded_share": round((deg - b_deg) / answers, 4),
                            "health": str(self.chains[model].health),
                        },
                    )
            await self._stale_default(model, now)
        await asyncio.to_thread(audits.update_episodes, updates)
        await self._reminders(now)

    async def _stale_default(self, model: str, now: float) -> None:
        max_age = self.audit_spec(model).default_max_age_s
        if max_age <= 0:
            return
        default = self.chains[model].default
        approved = await asyncio.to_thread(self.audits.last_approval, model)
        fresh = max(x for x in (default.refreshed_at, approved, self.started) if x is not None)
        if now - fresh > max_age:
            await self.open_item(
                model, "stale_default", {"age_s": round(now - fresh, 1), "max_age_s": max_age}
            )

    async def open_item(self, model: str, kind: str, details: dict[str, Any]) -> None:
        default = self.chains[model].default
        details = {
            **details,
            "default_value": default.value,
            "default_origin": default.origin,
            "default_refreshed_at": default.refreshed_at,
            "default_last_approved": await asyncio.to_thread(self.audits.last_approval, model),
        }
        item = await asyncio.to_thread(self.audits.open, model, kind, details)
        if item is not None:
            self.notifier.notify(
                self.audit_spec(model), {"event": "audit_opened", "audit_id": item.id, **item.to_dict()}
            )

    async def _reminders(self, now: float) -> None:
        for item in await asyncio.to_thread(self.audits.items, "open"):
            if (
                item.model in self.chains
                and now - item.notified_at > self.audit_spec(item.model).remind_after_s
            ):
                await asyncio.to_thread(self.audits.notified, item.id)
                self.notifier.notify(
                    self.audit_spec(item.model),
                    {"event": "audit_reminder", "audit_id": item.id, **item.to_dict()},
                )
