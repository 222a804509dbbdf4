"""The audit queue: items that ask a person to look, and the trail of what people did about them.

Kept in the store, so every replica sees one queue. At most one open item per (model, kind): replicas
that notice the same episode open it once.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from failsoft.store import Store

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


@dataclass(frozen=True)
class AuditItem:
    id: int
    model: str
    kind: str
    status: str  # open, acknowledged, resolved
    opened_at: float
    notified_at: float
    closed_at: float | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "kind": self.kind,
            "status": self.status,
            "opened_at": self.opened_at,
            "notified_at": self.notified_at,
            "closed_at": self.closed_at,
            "details": self.details,
        }


_ITEM = "SELECT id, model, kind, status, opened_at, notified_at, closed_at, details FROM audit_items"


def _item(row: tuple[Any, ...]) -> AuditItem:
    return AuditItem(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))


class AuditQueue:
    def __init__(self, store: Store) -> None:
        self.store = store

    # ---- items ------------------------------------------------------------------------------------------

    def open(self, model: str, kind: str, details: dict[str, Any]) -> AuditItem | None:
        """Open an item; None when one is already open for this model and kind."""
        now = time.time()
        sql_insert = (
            "INSERT INTO audit_items (model, kind, status, opened_at, notified_at, details) "
            "VALUES (?, ?, 'open', ?, ?, ?) ON CONFLICT DO NOTHING RETURNING id"
        )
        rows = self.store.execute(sql_insert, (model, kind, now, now, json.dumps(details)))
        return self.get(int(rows[0][0])) if rows else None

    def get(self, item_id: int) -> AuditItem | None:
        rows = self.store.execute(f"{_ITEM} WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def items(self, status: str | None = None, model: str | None = None) -> list[AuditItem]:
        where: list[str] = []
        args: list[Any] = []
        if status == "unresolved":
            where.append("status <> 'resolved'")
        elif status:
            where.append("status = ?")
            args.append(status)
        if model:
            where.append("model = ?")
            args.append(model)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return [_item(r) for r in self.store.execute(f"{_ITEM}{clause} ORDER BY id", args)]

    def open_for(self, model: str, kind: str) -> AuditItem | None:
        rows = self.store.execute(
            f"{_ITEM} WHERE model = ? AND kind = ? AND status <> 'resolved'", (model, kind)
        )
        return _item(rows[0]) if rows else None

    def set_status(self, item_id: int, status: str) -> None:
        closed = time.time() if status == "resolved" else None
        self.store.execute(
            "UPDATE audit_items SET status = ?, closed_at = ? WHERE id = ?", (status, closed, item_id)
        )

    def notified(self, item_id: int) -> None:
        self.store.execute("UPDATE audit_items SET notified_at = ? WHERE id = ?", (time.time(), item_id))

    # ---- the trail --------------------------------------------------------------------------------------

    def record(
        self,
        audit_id: int | None,
        model: str,
        action: str,
        actor: str,
        comment: str = "",
        details: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        rows = self.store.execute(
            "INSERT INTO audit_actions (audit_id, model, action, actor, comment, details, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (audit_id, model, action, actor, comment, json.dumps(details or {}), now),
        )
        return {
            "id": int(rows[0][0]),
            "audit_id": audit_id,
            "model": model,
            "action": action,
            "actor": actor,
            "comment": comment,
            "details": details or {},
            "ts": now,
        }

    def log(
        self, model: str | None = None, audit_id: int | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if model:
            where.append("model = ?")
            args.append(model)
        if audit_id is not None:
            where.append("audit_id = ?")
            args.append(audit_id)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.store.execute(
            f"SELECT id, audit_id, model, action, actor, comment, details, ts FROM audit_actions{clause} "
            "ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )
        return [
            {
                "id": r[0],
                "audit_id": r[1],
                "model": r[2],
                "action": r[3],
                "actor": r[4],
                "comment": r[5],
                "details": json.loads(r[6]),
                "ts": r[7],
            }
            for r in rows
        ]

    def last_approval(self, model: str) -> float | None:
        rows = self.store.execute(
            "SELECT max(ts) FROM audit_actions "
            "WHERE model = ? AND action IN ('approve_default', 'replace_default')",
            (model,),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    # ---- episodes ---------------------------------------------------------------------------------------

    def start_episode(self, model: str, replica: str, started_at: float) -> int:
        rows = self.store.execute(
            "INSERT INTO episodes (model, replica, started_at, reasons, answers, degraded) "
            "VALUES (?, ?, ?, '{}', 0, 0) RETURNING id",
            (model, replica, started_at),
        )
        return int(rows[0][0])

    def update_episode(
        self,
        episode_id: int,
        reasons: dict[str, int],
        answers: int,
        degraded: int,
        ended_at: float | None = None,
    ) -> None:
        self.store.execute(
            "UPDATE episodes SET reasons = ?, answers = ?, degraded = ?, ended_at = ? WHERE id = ?",
            (json.dumps(reasons), answers, degraded, ended_at, episode_id),
        )

    def episodes(self, model: str | None = None) -> list[dict[str, Any]]:
        clause, args = (" WHERE model = ?", [model]) if model else ("", [])
        rows = self.store.execute(
            "SELECT id, model, replica, started_at, ended_at, reasons, answers, degraded "
            f"FROM episodes{clause} ORDER BY id",
            args,
        )
        return [
            {
                "id": r[0],
                "model": r[1],
                "replica": r[2],
                "started_at": r[3],
                "ended_at": r[4],
                "reasons": json.loads(r[5]),
                "answers": r[6],
                "degraded": r[7],
            }
            for r in rows
        ]
