"""The health service: the state every replica must agree on, recorded in the store first and applied
after, by every replica, restarts included.

- **Health** (``live``, ``warning``, ``quarantined``, ``audit``), changed by the monitor, by people and by
  the end of a "keep it out" period. A keep-out's end is stored with the state, so a replica started
  during it honours it, and whichever replica sees it due first ends it (once: the store arbitrates).
- **Primaries**: which eligible tier answers for a model (promotions and rollbacks).
- **Pinned defaults**: a safe default a person set, kept until a person asks for a refresh.

Changes made anywhere reach this replica at once when the store can tell (PostgreSQL's NOTIFY, heard by a
thread of its own), else at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from failsoft.chain import Chain
from failsoft.errors import UnknownModel
from failsoft.store import ModelState, Store, StoreUnavailable
from failsoft.store.audits import AuditQueue
from failsoft.store.base import DefaultState
from failsoft.store.deployments import Deployments
from failsoft.tasks import stop, wait_set
from failsoft.types import Health

__all__ = ["HealthService"]

log = logging.getLogger("failsoft.health")

ACTOR = "failsoft"


class HealthService:
    def __init__(
        self,
        chains: Mapping[str, Chain],
        store: Store,
        audits: AuditQueue,
        poll_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.chains = chains
        self.store = store
        self.audits = audits
        self.poll_s = poll_s
        self.clock = clock
        # model -> when its "keep it out" period ends (epoch seconds), as the store has it
        self.kept_out: dict[str, float] = {}
        self.revision = 0
        self._warned = False
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        # called after each look at the store (the portfolio follows a reload made by another replica)
        self.after_sync: Callable[[], Awaitable[None]] | None = None

    def chain(self, model: str) -> Chain:
        chain = self.chains.get(model)
        if chain is None:
            raise UnknownModel(model, list(self.chains))
        return chain

    # ---- life cycle -------------------------------------------------------------------------------------

    async def pinned_defaults(self) -> dict[tuple[str, str], DefaultState]:
        """The defaults people left, by (model, tier): a replica whose source and disk copy are gone starts
        from them. Empty while the store cannot be reached."""
        try:
            return {(d.model, d.tier): d for d in await asyncio.to_thread(self.store.load_defaults)}
        except StoreUnavailable:
            return {}

    async def start(self) -> None:
        await self.sync()
        await self.end_keep_outs()
        self._task = asyncio.create_task(self._poll(), name="failsoft-state-poll")

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _poll(self) -> None:
        loop = asyncio.get_running_loop()
        wake = self._wake = asyncio.Event()
        stopping = threading.Event()

        def changed() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to wake
                loop.call_soon_threadsafe(wake.set)

        listener = threading.Thread(
            target=self.store.listen, args=(changed, stopping), name="failsoft-state-listen", daemon=True
        )
        listener.start()
        try:
            while True:
                # the next poll, or a keep-out's end if that comes first: it ends on time
                due = min(self.kept_out.values(), default=float("inf")) - self.clock()
                await wait_set(wake, max(0.0, min(self.poll_s, due)))
                wake.clear()
                try:
                    await self.sync()
                    await self.end_keep_outs()
                    if self.after_sync is not None:
                        await self.after_sync()
                except StoreUnavailable:
                    pass  # said once by sync; the next turn tries again
                except Exception:  # the state loop must go on; it is never in the request path
                    log.exception("applying shared state failed")
        finally:
            stopping.set()

    # ---- applying the store's state --------------------------------------------------------------------

    async def sync(self) -> None:
        """Apply the state changes any replica made since the last look."""
        store = self.store
        try:
            revision = await asyncio.to_thread(store.state_revision)
            if revision == self.revision:
                return
            states = await asyncio.to_thread(store.load_states)
            deployments = await asyncio.to_thread(Deployments(store).all)
            defaults = await asyncio.to_thread(store.load_defaults)
        except StoreUnavailable as err:
            if not self._warned:
                self._warned = True
                log.warning(json.dumps({"event": "state_store_unavailable", "error": str(err)[:300]}))
            return
        self._warned = False
        for state in states.values():
            self.apply(state)
        for model, live in deployments.items():
            chain = self.chains.get(model)
            if chain is not None and not chain.make_primary(live):
                log.warning(json.dumps({"event": "deployment_ignored", "model": model, "primary": live,
                                        "why": "not a tier or candidate in portfolio.toml"}))  # fmt: skip
        for shared in defaults:
            chain = self.chains.get(shared.model)
            if chain is not None and chain.default.name == shared.tier and chain.default.adopt(shared):
                await asyncio.to_thread(chain.default.refresh)  # unpinned elsewhere: back to the source
        self.revision = revision

    def apply(self, state: ModelState) -> None:
        chain = self.chains.get(state.model)
        if chain is None:
            return
        until = state.kept_out_until
        if until is None:
            self.kept_out.pop(state.model, None)
        elif self.kept_out.get(state.model) != until:
            self.kept_out[state.model] = until
            if self._wake is not None:
                self._wake.set()  # a new end may come before the poll's next turn: it waits for it
        new = Health(state.health)
        if chain.health is new:
            chain.set_health(new, state.reason)
            return
        if new is Health.LIVE:
            for tier in chain.tiers:
                tier.breaker.reset()
        log.warning(json.dumps({"event": "health_changed", "model": state.model, "from": str(chain.health),
                                "to": str(new), "reason": state.reason, "by": state.changed_by}))  # fmt: skip
        chain.set_health(new, state.reason)

    # ---- changes ----------------------------------------------------------------------------------------

    async def set_health(
        self,
        model: str,
        health: Health | str,
        reason: str = "",
        actor: str = "api",
        for_s: float | None = None,
    ) -> ModelState:
        """Change a model's health for every replica (quarantine, restore); with ``for_s`` the change is a
        keep-out that ends by itself that many seconds from now. Raises StoreUnavailable when the change
        cannot be recorded: a change other replicas would never see is not made at all."""
        self.chain(model)
        value = Health(health)
        until = self.clock() + for_s if for_s is not None else None
        state = await asyncio.to_thread(self.store.set_health, model, value.value, reason, actor, until)
        self.apply(state)
        return state

    async def end_keep_outs(self) -> None:
        """Bring back the models whose keep-out period is over, recorded like any action. Replicas racing
        here end it once."""
        now = self.clock()
        for model, until in list(self.kept_out.items()):
            if now < until:
                continue
            state = await asyncio.to_thread(
                self.store.end_keep_out, model, until, "keep-out period over", ACTOR
            )
            if state is None:  # another replica (or a person) got there first: its change is in the store
                self.kept_out.pop(model, None)
                self.revision = -1  # read the store's state at the next turn
                continue
            self.apply(state)
            await asyncio.to_thread(self.audits.record, None, model, "keep_out_ended", ACTOR)

    def deploy(self, model: str, live: str) -> bool:
        """Apply a flip recorded in the store (promotion, rollback) here at once; others do at their poll."""
        return self.chain(model).make_primary(live)

    async def replace_default(self, model: str, value: Any, actor: str, reason: str = "") -> None:
        """A person's value becomes the model's safe default on every replica, pinned (no refresh from the
        source replaces it) until a person asks for a refresh. Raises ValueError when the output check
        refuses it, StoreUnavailable when it cannot be recorded (nothing is changed then)."""
        default = self.chain(model).default
        if (problem := default.problem(value)) is not None:
            raise ValueError(problem)
        shared = await asyncio.to_thread(
            self.store.set_default, model, default.name, json.dumps(value), True, actor, reason
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
                self.store.set_default, model, default.name, json.dumps(default.value), False, actor, reason
            )
        except StoreUnavailable:
            default.value, default.refreshed_at, default.origin = before  # a change made nowhere else
            raise
        default.adopt(shared)
        return True
