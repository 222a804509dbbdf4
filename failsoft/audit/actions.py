"""What a person can do about an audit item; each action is recorded with who, when, what and why."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from failsoft.audit.queue import ACTIONS
from failsoft.errors import AuditError
from failsoft.types import Health

if TYPE_CHECKING:
    from failsoft.portfolio import Portfolio

MISSING: Any = object()


async def act(
    p: Portfolio,
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
    item = await asyncio.to_thread(p.audits.get, item_id)
    if item is None:
        raise AuditError(f"no audit item {item_id}", not_found=True)
    if item.status == "resolved" and action != "comment":
        raise AuditError(f"audit item {item_id} is already resolved")
    model = item.model
    chain = p.chain(model)
    default = chain.default
    details: dict[str, Any] = {}
    status = "resolved"
    if action in {"approve_promotion", "reject_promotion"} and item.kind != "approval":
        raise AuditError(f"{action} applies to promotion approvals; item {item_id} is a {item.kind!r} audit")
    if action == "approve_promotion":
        from failsoft.shadow import deploy

        candidate = item.details["candidate"]
        why = comment or f"approved by {actor}"
        done = await asyncio.to_thread(
            deploy.promote, p.state_store, p.spec, model, candidate, actor, why, False, True
        )
        p.deploy(model, done["to"])
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
        ok = await p.refresh_default(model, actor, comment)
        if not ok:
            raise AuditError(f"the default of {model!r} could not be recomputed from {default.spec.source}")
        details = {"value": default.value}
    elif action == "replace_default":
        if value is MISSING:
            raise AuditError("replace_default needs a value")
        old = default.value
        try:
            await p.replace_default(model, value, actor, comment)
        except ValueError as err:
            raise AuditError(str(err)) from None
        details = {"old": old, "new": value}
    elif action == "restore":
        p.kept_out.pop(model, None)
        await p.set_health(model, Health.LIVE, comment or f"restored by {actor}", actor)
        for tier in chain.tiers:
            tier.breaker.reset()
    elif action == "keep_out":
        if not for_s or for_s <= 0:
            raise AuditError("keep_out needs for_s, a positive number of seconds")
        until = time.time() + for_s
        await p.set_health(model, Health.QUARANTINED, comment or f"kept out by {actor}", actor)
        p.kept_out[model] = until
        details = {"until": until, "for_s": for_s}
    if status != item.status:
        await asyncio.to_thread(p.audits.set_status, item_id, status)
    record = await asyncio.to_thread(p.audits.record, item_id, model, action, actor, comment, details)
    after = await asyncio.to_thread(p.audits.get, item_id)
    return {"item": after.to_dict() if after else None, "action": record}
