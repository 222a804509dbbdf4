"""Changing a serving portfolio without a restart (``failsoft reload``, SIGHUP, ``POST /v1/reload``).

The new file is read and checked whole first, as ``failsoft check`` does: a bad file changes nothing and
says what is wrong. Then the models that differ are built beside the old ones (their tiers started and,
unless loaded on first use, their models loaded off the event loop), and the portfolio's table of chains
changes in one step on the event loop: a request keeps the chain it started on, so requests in flight
finish on the old model; unchanged models keep their chain, with its breakers and health. The old chains
are closed once every request that could hold one has ended (their deadlines are the bound). Every
model added, removed or replaced is recorded in the audit log (who, when, what changed).

Some things are set up once at start and are not changed by a reload: a model's shadow candidates and its
monitor (a reload that would add, change or remove them is refused, with the fix: restart), and the
tables outside ``[models]`` (the store, the server, the audit and feature settings): a change there is
said in the answer (``restart_needed``) and applies at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from failsoft import config
from failsoft.build import Builder
from failsoft.chain import Chain
from failsoft.config import ModelSpec, PortfolioSpec
from failsoft.errors import ConfigError
from failsoft.features.online import OnlineTable
from failsoft.metrics import Metrics
from failsoft.resilience import Clock
from failsoft.skips import SkipLog
from failsoft.store import Store, StoreUnavailable
from failsoft.store.audits import AuditQueue
from failsoft.store.base import DefaultState, StateEvent
from failsoft.tiers.loader import Loader
from failsoft.tiers.python import PythonBackend

__all__ = ["Change", "build_started", "files", "plan", "record", "retire", "start_chains"]

log = logging.getLogger("failsoft.reload")

# the tables outside [models] whose change needs a restart (data_dir, trusted_model_dirs: ours to read)
_PROCESS_TABLES = ("data_dir", "trusted_model_dirs", "server", "store", "audit", "features", "shadow")


class Change(msgspec.Struct, frozen=True):
    """What a reload changed (or, from ``plan``, will change)."""

    added: list[str] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)
    replaced: list[str] = msgspec.field(default_factory=list)
    unchanged: int = 0
    # tables outside [models] that differ: they apply at the next start
    restart_needed: list[str] = msgspec.field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.replaced)

    def summary(self) -> str:
        parts = [f"{len(self.added)} added", f"{len(self.removed)} removed", f"{len(self.replaced)} replaced",
                 f"{self.unchanged} unchanged"]  # fmt: skip
        if self.restart_needed:
            parts.append(f"at the next start: {', '.join(self.restart_needed)}")
        return ", ".join(parts)


def _set_up_at_start(model: ModelSpec) -> str | None:
    """The key of a model's part a reload cannot change (candidates, monitor), or None."""
    if model.candidates:
        return "candidates"
    if model.monitor is not None:
        return "monitor"
    return None


def files(spec: PortfolioSpec, model: ModelSpec) -> tuple[tuple[str, int, int], ...]:
    """The model files a model's tiers load, each with its size and modification time: a file written
    again in place (a model retrained) makes the model differ though its table does not."""
    out = []
    for tier in [*model.tiers, *model.candidates]:
        path = getattr(tier, "path", None)
        if isinstance(path, str):
            try:
                st = spec.resolve(path).stat()
                out.append((path, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((path, -1, -1))
    return tuple(out)


def plan(
    old: PortfolioSpec, new: PortfolioSpec, old_files: dict[str, tuple[tuple[str, int, int], ...]]
) -> Change:
    """What going from ``old`` (whose models were built from ``old_files``) to ``new`` changes; raises
    ConfigError (naming the key and the fix) for a change a reload cannot make."""
    added = [m for m in new.models if m not in old.models]
    removed = [m for m in old.models if m not in new.models]
    replaced = [
        m
        for m in new.models
        if m in old.models
        and (new.models[m] != old.models[m] or files(new, new.models[m]) != old_files.get(m))
    ]
    for name in [*added, *removed, *replaced]:
        for spec in (old.models.get(name), new.models.get(name)):
            key = _set_up_at_start(spec) if spec is not None else None
            if key is not None:
                raise ConfigError(
                    new.file,
                    f"models.{name}.{key}",
                    f"a model with {key} is set up at start; a reload cannot add, change or remove it",
                    "restart failsoft serve to apply this change",
                )
    restart = [t for t in _PROCESS_TABLES if getattr(old, t) != getattr(new, t)]
    unchanged = len(new.models) - len(added) - len(replaced)
    return Change(added, removed, replaced, unchanged, restart)


async def build_started(
    spec: PortfolioSpec,
    change: Change,
    metrics: Metrics,
    clock: Clock,
    loader: Loader,
    skip_log: SkipLog,
    online: dict[str, OnlineTable],
) -> tuple[dict[str, Chain], dict[str, OnlineTable]]:
    """The chains of the models ``change`` adds or replaces, built from ``spec`` and started (sharing the
    portfolio's loader, skip log and online tables), and the online tables then (new ones loaded)."""
    builder = Builder(spec, metrics, clock, loader=loader, skip_log=skip_log, online=dict(online))
    fresh = {name: builder.chain(name, spec.models[name]) for name in [*change.added, *change.replaced]}
    await start_chains(fresh.values())
    for name, table in builder.online.items():
        if name not in online:
            await asyncio.to_thread(table.load)
    return fresh, builder.online


async def start_chains(chains: Iterable[Chain], pinned: Mapping[tuple[str, str], DefaultState] = {}) -> None:
    """Start chains' tiers and defaults (at start, or new ones while serving; an in-process model loads in
    a thread, not on the event loop); a default a person pinned (``pinned``, by model and tier) is adopted
    first. What started is closed again if one fails (a model that would not load)."""
    started: list[Any] = []
    try:
        for chain in chains:
            for tier in chain.all_tiers():
                await tier.backend.start()
                started.append(tier.backend)
            if (kept := pinned.get((chain.model, chain.default.name))) is not None:
                chain.default.adopt(kept)
            await chain.default.start()
            started.append(chain.default)
    except BaseException:
        for backend in reversed(started):
            with contextlib.suppress(Exception):
                await backend.close()
        raise


def file_digest(path: Path) -> str | None:
    """The SHA-256 of a portfolio file (None when it cannot be read)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def read(path: Path) -> tuple[PortfolioSpec, str | None]:
    """A portfolio file read and checked whole (ConfigError when it is wrong), and its SHA-256."""
    digest = file_digest(path)
    return config.load(path), digest


class Follower:
    """A replica's side of a reload another replica made (a state event naming the file's SHA-256, on
    PostgreSQL a notification): it reloads its own portfolio.toml when that file is the same, at once. A
    file that differs (a ConfigMap not updated here yet) is said once and looked at again at every poll
    until it is the same, or a newer reload is announced."""

    def __init__(
        self,
        store: Store,
        path: Path,
        reload: Callable[..., Awaitable[Change]],
        digest: Callable[[], str | None],
        revision: Callable[[], int],
    ) -> None:
        """``revision``: the store's state revision as the health service's last look found it."""
        self.store, self.path, self.reload, self.digest = store, path, reload, digest
        self.store_revision = revision
        self.revision = -1  # the store's revision at the last look
        self.said = 0  # the last announcement said not followed (once each)
        # only reloads announced while this process runs: at its start it read its file as it was then
        self.since = time.time()
        self.seen = 0  # the last announcement applied (or found to be this replica's own)
        self.waiting: StateEvent | None = None  # announced, and this replica's file differs

    async def __call__(self) -> None:
        revision = self.store_revision()
        if revision != self.revision:
            self.revision = revision
            event = await asyncio.to_thread(self.store.last_portfolio)
            if event is not None and event.id > self.seen and event.ts >= self.since:
                self.waiting = event
        event = self.waiting
        if event is None:
            return
        if event.value == self.digest():
            self.seen, self.waiting = event.id, None
            return
        mine = await asyncio.to_thread(file_digest, self.path)
        if mine != event.value:
            if self.said != event.id:
                self.said = event.id
                why = "this replica's file differs from the one reloaded; looking again at every poll"
                log.warning(json.dumps({"event": "reload_not_followed", "by": event.actor, "why": why}))
            return
        self.seen, self.waiting = event.id, None
        try:
            await self.reload(actor=f"{event.actor} (another replica)")
        except ConfigError as err:
            log.error(json.dumps({"event": "reload_refused", "error": str(err), "changed": "nothing"}))


async def record(
    audits: AuditQueue, store: Store, change: Change, actor: str, file: str, digest: str | None
) -> None:
    """The reload said in the log; each model added, removed or replaced, in the audit log (as every
    action is); with ``digest``, the new file announced to the other replicas."""
    log.warning(json.dumps({"event": "portfolio_reloaded", "by": actor, **msgspec.to_builtins(change)}))
    kinds = [("model_added", change.added), ("model_removed", change.removed)]
    kinds.append(("model_replaced", change.replaced))
    actions = [(name, action) for action, names in kinds for name in names]
    try:
        if actions:
            await asyncio.to_thread(audits.record_many, actions, actor, {"file": file})
        if digest is not None:
            await asyncio.to_thread(store.announce_portfolio, digest, change.summary(), actor)
    except StoreUnavailable:
        log.warning(json.dumps({"event": "reload_not_recorded", "changes": len(actions), "by": actor}))


async def retire(chains: list[Chain], loader: Loader) -> None:
    """Close replaced and removed chains once no request can still hold one (a deadline's time)."""
    await asyncio.sleep(max(c.deadline_s for c in chains) + 1.0)
    for chain in chains:
        chain.listen(())
        for tier in chain.all_tiers():
            if isinstance(tier.backend, PythonBackend) and tier.backend.lazy:
                loader.forget(tier.backend)
            await tier.backend.close()
        await chain.default.close()
