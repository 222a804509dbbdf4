"""Which tier is each model's primary (``deployments``), and every flip that changed it (``flips``).

A flip is written in one transaction with its state event, so every replica applies it at its next state
poll (at once on PostgreSQL).
"""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec

from failsoft.store.base import Execute, Store, record_state

__all__ = ["Deployments", "FlipRecord"]


class FlipRecord(msgspec.Struct, frozen=True, rename={"from_tier": "from", "to_tier": "to"}):
    """One promotion or rollback: who, when, why, forced or not, and the evidence at that moment."""

    id: int
    action: str  # promote | rollback
    from_tier: str
    to_tier: str
    actor: str
    reason: str
    forced: bool
    evidence: Any
    ts: float


class Deployments:
    def __init__(self, store: Store) -> None:
        self.store = store

    def live(self, model: str) -> str | None:
        """The model's primary as last flipped; None when it was never flipped."""
        rows = self.store.execute("SELECT live FROM deployments WHERE model = ?", [model])
        return str(rows[0][0]) if rows else None

    def all(self) -> dict[str, str]:
        return {str(m): str(live) for m, live in self.store.execute("SELECT model, live FROM deployments")}

    def flip(
        self,
        model: str,
        action: str,
        src: str,
        dst: str,
        actor: str,
        reason: str,
        forced: bool,
        evidence: Any,
    ) -> FlipRecord:
        now = time.time()
        evidence = msgspec.to_builtins(evidence, enc_hook=str)
        proof = json.dumps(evidence)

        def write(execute: Execute) -> int:
            row = {"model": model, "live": dst, "changed_by": actor, "changed_at": now}
            record_state(execute, "deployments", ["model"], row, (model, "deploy", dst, reason, actor, now))
            return int(
                execute(
                    "INSERT INTO flips (model, action, from_tier, to_tier, actor, reason, forced, evidence, "
                    "ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    [model, action, src, dst, actor, reason, forced, proof, now],
                )[0][0]
            )

        flip_id = self.store.transaction(write)
        return FlipRecord(flip_id, action, src, dst, actor, reason, forced, evidence, now)

    def history(self, model: str, limit: int = 100) -> list[FlipRecord]:
        rows = self.store.execute(
            "SELECT id, action, from_tier, to_tier, actor, reason, forced, evidence, ts FROM flips "
            "WHERE model = ? ORDER BY id DESC LIMIT ?",
            [model, limit],
        )
        return [
            FlipRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]), json.loads(r[7]), r[8]) for r in rows
        ]
