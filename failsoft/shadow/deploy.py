"""Flipping a model's primary tier: promote a proven candidate, roll back, and the history of every flip.

The state is one row per model in ``deployments`` (which tier is the primary; absent: the first tier of
portfolio.toml) and one row per flip in ``flips`` (who, when, why, forced or not, and the evidence at that
moment), written in one transaction with a ``state_events`` row, so every replica applies the flip at its
next state poll. The old primary becomes a shadow candidate: it keeps being judged and is the rollback
target. These functions need only the config and the store, so the command line works with or without a
running server; the server applies a flip at once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from failsoft.audit.queue import AuditQueue
from failsoft.config import DefaultTierSpec, PortfolioSpec
from failsoft.errors import FailsoftError
from failsoft.shadow.evaluate import candidate_report
from failsoft.store import Store
from failsoft.store.base import state_event

APPROVAL = "approval"


class PromotionError(FailsoftError):
    """A promotion or rollback that cannot be made as asked (``status`` is the HTTP answer)."""

    def __init__(self, message: str, status: int = 400, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.details = details


def primary_eligible(spec: PortfolioSpec, model: str) -> list[str]:
    """The names that may be a model's primary: its first tier (unless that is the default) and its
    candidates."""
    m = spec.models.get(model)
    if m is None:
        raise PromotionError(f"unknown model {model!r}; known: {', '.join(sorted(spec.models))}", 404)
    first = [] if isinstance(m.tiers[0], DefaultTierSpec) else [m.tiers[0].name]
    return [*first, *(c.name for c in m.candidates)]


def current_live(store: Store, spec: PortfolioSpec, model: str) -> str:
    names = primary_eligible(spec, model)
    rows = store.execute("SELECT live FROM deployments WHERE model = ?", [model])
    if rows and rows[0][0] in names:
        return str(rows[0][0])
    return names[0]


def load_deployments(store: Store) -> dict[str, str]:
    return {str(m): str(live) for m, live in store.execute("SELECT model, live FROM deployments")}


def report(store: Store, spec: PortfolioSpec, model: str, now: float | None = None) -> dict[str, Any]:
    """Every shadow candidate of ``model``, judged against the live primary."""
    live = current_live(store, spec, model)
    policy = spec.models[model].promotion
    candidates = [n for n in primary_eligible(spec, model) if n != live]
    return {
        "model": model,
        "live": live,
        "policy": {f: getattr(policy, f) for f in policy.__struct_fields__},
        "candidates": [candidate_report(store, model, c, live, policy, now) for c in candidates],
    }


def _flip(
    store: Store, model: str, action: str, src: str, dst: str, actor: str, reason: str, forced: bool,
    evidence: Any,
) -> dict[str, Any]:  # fmt: skip
    now = time.time()

    def write(execute: Any) -> int:
        rev = state_event(execute, model, "deploy", dst, reason, actor, now)
        execute(
            "INSERT INTO deployments VALUES (?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET "
            "live = excluded.live, changed_by = excluded.changed_by, changed_at = excluded.changed_at, "
            "revision = excluded.revision",
            [model, dst, actor, now, rev],
        )
        return int(
            execute(
                "INSERT INTO flips (model, action, from_tier, to_tier, actor, reason, forced, evidence, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                [model, action, src, dst, actor, reason, forced, json.dumps(evidence, default=str), now],
            )[0][0]
        )

    flip_id = store.transaction(write)
    return {"status": "flipped", "id": flip_id, "model": model, "action": action, "from": src, "to": dst,
            "actor": actor, "reason": reason, "forced": forced, "ts": now}  # fmt: skip


def promote(
    store: Store,
    spec: PortfolioSpec,
    model: str,
    candidate: str,
    actor: str,
    reason: str = "",
    force: bool = False,
    approved: bool = False,
) -> dict[str, Any]:
    """Make ``candidate`` the primary when the policy passes (or with ``force`` and a reason). With
    ``require_approval`` the promotion waits in the audit queue for a person (kind "approval")."""
    live = current_live(store, spec, model)
    names = primary_eligible(spec, model)
    if candidate not in names:
        others = ", ".join(n for n in names if n != live) or "none"
        raise PromotionError(f"{candidate!r} is not a candidate of {model!r}; candidates: {others}", 404)
    if candidate == live:
        raise PromotionError(f"{candidate!r} is already the primary of {model!r}", 409)
    if force and not reason.strip():
        raise PromotionError("a forced promotion needs a reason (--reason TEXT); it is recorded")
    policy = spec.models[model].promotion
    evidence = candidate_report(store, model, candidate, live, policy)
    verdict = evidence["verdict"]
    if not verdict["passed"] and not force:
        failing = [r for r in verdict["rules"] if not r["passed"]]
        lines = "; ".join(f"{r['rule']}: {r['detail']}" for r in failing)
        raise PromotionError(f"the promotion policy does not pass: {lines}", 409, failing)
    if policy.require_approval and not approved and not force:
        queue = AuditQueue(store)
        details = {"candidate": candidate, "live": live, "requested_by": actor, "reason": reason,
                   "evidence": evidence}  # fmt: skip
        item = queue.open(model, APPROVAL, details) or queue.open_for(model, APPROVAL)
        assert item is not None
        queue.record(item.id, model, "promotion_requested", actor, reason, {"candidate": candidate})
        return {"status": "pending_approval", "audit_id": item.id, "model": model, "candidate": candidate}
    return _flip(store, model, "promote", live, candidate, actor, reason, force, evidence)


def rollback(
    store: Store, spec: PortfolioSpec, model: str, actor: str, reason: str = "", force: bool = False
) -> dict[str, Any]:
    """Flip back to the primary before the last flip. When the last flip was itself a rollback, flipping
    again would re-promote the candidate it took out without its policy: refused unless ``force``."""
    names = primary_eligible(spec, model)
    rows = store.execute(
        "SELECT from_tier, action FROM flips WHERE model = ? ORDER BY id DESC LIMIT 1", [model]
    )
    if not rows:
        raise PromotionError(f"{model!r} has never been flipped: nothing to roll back", 409)
    live = current_live(store, spec, model)
    target, last = str(rows[0][0]), str(rows[0][1])
    if target not in names:
        raise PromotionError(f"the previous primary {target!r} is no longer in portfolio.toml", 409)
    if last == "rollback" and not force:
        raise PromotionError(
            f"the last flip of {model!r} was already a rollback (to {live!r}); rolling back again would make "
            f"{target!r} the primary unchecked: promote it (its policy is checked), or roll back with force "
            "and a reason",
            409,
        )
    evidence = candidate_report(store, model, target, live, spec.models[model].promotion)
    return _flip(store, model, "rollback", live, target, actor, reason or "rollback", force, evidence)


def history(store: Store, model: str, limit: int = 100) -> list[dict[str, Any]]:
    rows = store.execute(
        "SELECT id, action, from_tier, to_tier, actor, reason, forced, evidence, ts FROM flips "
        "WHERE model = ? ORDER BY id DESC LIMIT ?",
        [model, limit],
    )
    return [
        {
            "id": r[0],
            "action": r[1],
            "from": r[2],
            "to": r[3],
            "actor": r[4],
            "reason": r[5],
            "forced": bool(r[6]),
            "evidence": json.loads(r[7]),
            "ts": r[8],
        }
        for r in rows
    ]
