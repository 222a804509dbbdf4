"""Flipping a model's primary tier: promote a proven candidate, roll back, and the history of every flip.

The state is one row per model in ``deployments`` (which tier is the primary; absent: the first tier of
portfolio.toml) and one row per flip in ``flips`` (who, when, why, forced or not, and the evidence at that
moment), written in one transaction with a ``state_events`` row, so every replica applies the flip at its
next state poll. The old primary becomes a shadow candidate: it keeps being judged and is the rollback
target. These functions need only the config and the store, so the command line works with or without a
running server; the server applies a flip at once.
"""

from __future__ import annotations

from typing import Any

import msgspec

from failsoft.config import DefaultTierSpec, PortfolioSpec
from failsoft.errors import (
    AlreadyPrimary,
    NothingToUndo,
    PolicyNotMet,
    PromotionError,
    UnknownCandidate,
    UnknownModel,
)
from failsoft.shadow.evaluate import CandidateReport, candidate_report
from failsoft.store import Store
from failsoft.store.audits import AuditQueue
from failsoft.store.base import LogReader
from failsoft.store.deployments import Deployments, FlipRecord

APPROVAL = "approval"


def primary_eligible(spec: PortfolioSpec, model: str) -> list[str]:
    """The names that may be a model's primary: its first tier (unless that is the default) and its
    candidates."""
    m = spec.models.get(model)
    if m is None:
        raise UnknownModel(model, list(spec.models))
    first = [] if isinstance(m.tiers[0], DefaultTierSpec) else [m.tiers[0].name]
    return [*first, *(c.name for c in m.candidates)]


def current_live(store: Store, spec: PortfolioSpec, model: str) -> str:
    names = primary_eligible(spec, model)
    live = Deployments(store).live(model)
    return live if live in names else names[0]


class ShadowReport(msgspec.Struct, frozen=True):
    """Every shadow candidate of a model, judged against its live primary under the model's policy."""

    model: str
    live: str
    policy: dict[str, Any]
    candidates: list[CandidateReport]


def _answers(spec: PortfolioSpec, store: Store) -> LogReader:
    """Where the shadows' answers are read: the lake once landed when the log goes to a stream, else the
    store."""
    from failsoft.store.lake_read import log_reader

    return log_reader(spec, store, required=False)


def report(store: Store, spec: PortfolioSpec, model: str, now: float | None = None) -> ShadowReport:
    """Every shadow candidate of ``model``, judged against the live primary."""
    live = current_live(store, spec, model)
    policy = spec.models[model].promotion
    candidates = [n for n in primary_eligible(spec, model) if n != live]
    return ShadowReport(
        model,
        live,
        msgspec.to_builtins(policy),
        [candidate_report(store, model, c, live, policy, now, _answers(spec, store)) for c in candidates],
    )


def _flipped(model: str, flip: FlipRecord) -> dict[str, Any]:
    return {"status": "flipped", "model": model, **msgspec.to_builtins(flip)}


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
        raise UnknownCandidate(f"{candidate!r} is not a candidate of {model!r}; candidates: {others}")
    if candidate == live:
        raise AlreadyPrimary(f"{candidate!r} is already the primary of {model!r}")
    if force and not reason.strip():
        raise PromotionError("a forced promotion needs a reason (--reason TEXT); it is recorded")
    policy = spec.models[model].promotion
    evidence = candidate_report(store, model, candidate, live, policy, log=_answers(spec, store))
    if not evidence.verdict.passed and not force:
        failing = [r for r in evidence.verdict.rules if not r.passed]
        lines = "; ".join(f"{r.rule}: {r.detail}" for r in failing)
        raise PolicyNotMet(f"the promotion policy does not pass: {lines}", msgspec.to_builtins(failing))
    if policy.require_approval and not approved and not force:
        queue = AuditQueue(store)
        details = {"candidate": candidate, "live": live, "requested_by": actor, "reason": reason,
                   "evidence": msgspec.to_builtins(evidence)}  # fmt: skip
        item = queue.open(model, APPROVAL, details) or queue.open_for(model, APPROVAL)
        assert item is not None
        queue.record(item.id, model, "promotion_requested", actor, reason, {"candidate": candidate})
        return {"status": "pending_approval", "audit_id": item.id, "model": model, "candidate": candidate}
    flip = Deployments(store).flip(model, "promote", live, candidate, actor, reason, force, evidence)
    return _flipped(model, flip)


def rollback(
    store: Store, spec: PortfolioSpec, model: str, actor: str, reason: str = "", force: bool = False
) -> dict[str, Any]:
    """Flip back to the primary before the last flip. When the last flip was itself a rollback, flipping
    again would re-promote the candidate it took out without its policy: refused unless ``force``."""
    names = primary_eligible(spec, model)
    deployments = Deployments(store)
    last_flips = deployments.history(model, limit=1)
    if not last_flips:
        raise NothingToUndo(f"{model!r} has never been flipped: nothing to roll back")
    live = current_live(store, spec, model)
    target, last = last_flips[0].from_tier, last_flips[0].action
    if target not in names:
        raise NothingToUndo(f"the previous primary {target!r} is no longer in portfolio.toml")
    if last == "rollback" and not force:
        raise NothingToUndo(
            f"the last flip of {model!r} was already a rollback (to {live!r}); rolling back again would make "
            f"{target!r} the primary unchecked: promote it (its policy is checked), or roll back with force "
            "and a reason"
        )
    evidence = candidate_report(
        store, model, target, live, spec.models[model].promotion, log=_answers(spec, store)
    )
    flip = deployments.flip(model, "rollback", live, target, actor, reason or "rollback", force, evidence)
    return _flipped(model, flip)


def history(store: Store, model: str, limit: int = 100) -> list[FlipRecord]:
    return Deployments(store).history(model, limit)
