"""What a person can do about an audit item; each action is recorded with who, when, what and why."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from failsoft.config import PortfolioSpec
from failsoft.errors import AuditError, NoSuchAudit
from failsoft.monitor.health import HealthService
from failsoft.shadow import deploy
from failsoft.store.audits import AuditQueue
from failsoft.types import Health

KINDS = ("fallback", "stale_default", "approval")
ACTIONS = (
    "ack",
    "approve_default",
    "refresh_default",
    "replace_default",
    "restore",
    "keep_out",
    "comment",
    # on a promotion waiting for a person (kind "approval")
    "approve_promotion",
    "reject_promotion",
)

MISSING: Any = msgspec.UNSET  # no value given (UNSET: left out of JSON, and of the OpenAPI schema's required)


async def act(
    audits: AuditQueue,
    health: HealthService,
    spec: PortfolioSpec,
    item_id: int,
    action: str,
    actor: str,
    comment: str = "",
    value: Any = MISSING,
    for_s: float | None = None,
) -> dict[str, Any]:
    """Take ``action`` on audit item ``item_id`` as ``actor``; returns the item and the recorded action."""
    if action not in ACTIONS:
        raise AuditError(f"unknown action {action!r}; one of: {', '.join(ACTIONS)}")
    item = await asyncio.to_thread(audits.get, item_id)
    if item is None:
        raise NoSuchAudit(f"no audit item {item_id}")
    if item.status == "resolved" and action != "comment":
        raise AuditError(f"audit item {item_id} is already resolved")
    model = item.model
    chain = health.chain(model)
    default = chain.default
    details: dict[str, Any] = {}
    status = "resolved"
    if action in {"approve_promotion", "reject_promotion"} and item.kind != "approval":
        raise AuditError(f"{action} applies to promotion approvals; item {item_id} is a {item.kind!r} audit")
    if action == "approve_promotion":
        candidate = item.details["candidate"]
        why = comment or f"approved by {actor}"
        done = await asyncio.to_thread(
            deploy.promote, health.store, spec, model, candidate, actor, why, False, True
        )
        health.deploy(model, done["to"])
        details = {"flip": done["id"], "candidate": candidate}
    elif action == "reject_promotion":
        details = {"candidate": item.details.get("candidate")}
    elif action == "ack":
        status = "acknowledged"
    elif action == "comment":
        status = item.status
    elif action == "approve_default":
        details = {"value": default.value, "origin": default.origin}
    elif action == "refresh_default":
        if default.spec.source is None:
            raise AuditError(f"the default of {model!r} is a static value: replace it instead")
        ok = await health.refresh_default(model, actor, comment)
        if not ok:
            raise AuditError(f"the default of {model!r} could not be recomputed from {default.spec.source}")
        details = {"value": default.value}
    elif action == "replace_default":
        if value is MISSING:
            raise AuditError("replace_default needs a value")
        old = default.value
        try:
            await health.replace_default(model, value, actor, comment)
        except ValueError as err:
            raise AuditError(str(err)) from None
        details = {"old": old, "new": value}
    elif action == "restore":
        await health.set_health(model, Health.LIVE, comment or f"restored by {actor}", actor)
        for tier in chain.tiers:
            tier.breaker.reset()
    elif action == "keep_out":
        if not for_s or for_s <= 0:
            raise AuditError("keep_out needs for_s, a positive number of seconds")
        state = await health.set_health(
            model, Health.QUARANTINED, comment or f"kept out by {actor}", actor, for_s=for_s
        )
        details = {"until": state.kept_out_until, "for_s": for_s}
    if status != item.status:
        await asyncio.to_thread(audits.set_status, item_id, status)
    record = await asyncio.to_thread(audits.record, item_id, model, action, actor, comment, details)
    after = await asyncio.to_thread(audits.get, item_id)
    return {"item": msgspec.to_builtins(after) if after else None, "action": msgspec.to_builtins(record)}
