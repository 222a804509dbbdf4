"""The audit queue's records: items that ask a person to look, the trail of what people did, and the
fallback episodes the watch saw.

Kept in the store, so every replica sees one queue. At most one open item per (model, kind): replicas
that notice the same episode open it once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from failsoft.store.base import Execute, Store

__all__ = ["AuditAction", "AuditItem", "AuditQueue", "Episode"]

_INSERT_ACTION = (
    "INSERT INTO audit_actions (audit_id, model, action, actor, comment, details, ts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class AuditItem(msgspec.Struct, frozen=True):
    id: int
    model: str
    kind: str
    status: str  # open, acknowledged, resolved
    opened_at: float
    notified_at: float
    closed_at: float | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return msgspec.structs.asdict(self)


class AuditAction(msgspec.Struct, frozen=True):
    """One thing a person (or failsoft itself) did, recorded with who, when and why."""

    id: int
    audit_id: int | None
    model: str
    action: str
    actor: str
    comment: str
    details: dict[str, Any]
    ts: float


class Episode(msgspec.Struct, frozen=True):
    """A stretch of time one replica served a model's answers mostly from fallbacks."""

    id: int
    model: str
    replica: str
    started_at: float
    ended_at: float | None
    reasons: dict[str, int]
    answers: int
    degraded: int


_ITEM = "SELECT id, model, kind, status, opened_at, notified_at, closed_at, details FROM audit_items"
_ACTION = "SELECT id, audit_id, model, action, actor, comment, details, ts FROM audit_actions"


def _item(row: tuple[Any, ...]) -> AuditItem:
    return AuditItem(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7]))


def _where(**equal: Any) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` over the arguments that are not None."""
    given = {k: v for k, v in equal.items() if v is not None}
    clause = " AND ".join(f"{k} = ?" for k in given)
    return (f" WHERE {clause}" if clause else ""), list(given.values())


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
        rows = self.store.execute(sql_insert, (model, kind, now, now, json.dumps(details, default=str)))
        return self.get(int(rows[0][0])) if rows else None

    def get(self, item_id: int) -> AuditItem | None:
        rows = self.store.execute(f"{_ITEM} WHERE id = ?", (item_id,))
        return _item(rows[0]) if rows else None

    def items(self, status: str | None = None, model: str | None = None) -> list[AuditItem]:
        if status == "unresolved":
            clause, args = _where(model=model)
            clause = f"{clause} AND status <> 'resolved'" if clause else " WHERE status <> 'resolved'"
        else:
            clause, args = _where(status=status or None, model=model or None)
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
    ) -> AuditAction:
        now = time.time()
        details = details or {}
        rows = self.store.execute(
            f"{_INSERT_ACTION} RETURNING id",
            (audit_id, model, action, actor, comment, json.dumps(details, default=str), now),
        )
        return AuditAction(int(rows[0][0]), audit_id, model, action, actor, comment, details, now)

    def record_many(self, actions: Sequence[tuple[str, str]], actor: str, details: dict[str, Any]) -> None:
        """(model, action) pairs by one actor, in one transaction (a reload changing hundreds of models)."""
        now, text = time.time(), json.dumps(details, default=str)

        def write(execute: Execute) -> None:
            for model, action in actions:
                execute(_INSERT_ACTION, (None, model, action, actor, "", text, now))

        self.store.transaction(write)

    def log(
        self, model: str | None = None, audit_id: int | None = None, limit: int = 200
    ) -> list[AuditAction]:
        clause, args = _where(model=model or None, audit_id=audit_id)
        rows = self.store.execute(f"{_ACTION}{clause} ORDER BY id DESC LIMIT ?", [*args, limit])
        return [AuditAction(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), r[7]) for r in rows]

    def last_approval(self, model: str) -> float | None:
        rows = self.store.execute(
            "SELECT max(ts) FROM audit_actions "
            "WHERE model = ? AND action IN ('approve_default', 'replace_default')",
            (model,),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    # ---- episodes ---------------------------------------------------------------------------------------

    def start_episodes(self, models: list[str], replica: str, started_at: float) -> list[int]:
        """An episode for each of ``models``, in one transaction; their ids, in order."""
        sql = (
            "INSERT INTO episodes (model, replica, started_at, reasons, answers, degraded) "
            "VALUES (?, ?, ?, '{}', 0, 0) RETURNING id"
        )
        return self.store.transaction(
            lambda execute: [int(execute(sql, (m, replica, started_at))[0][0]) for m in models]
        )

    def update_episodes(self, updates: list[tuple[int, dict[str, int], int, int, float | None]]) -> None:
        """Episodes' tallies (id, reasons, answers, degraded, ended at or None), written in one transaction:
        the audit watch's every tick, for every model in fallback (hundreds after traffic has cycled through
        a thousand models, whose fallbacks while loading count), where a write each held the loop's thread
        pool and the store a second at a time."""
        if not updates:
            return
        sql = "UPDATE episodes SET reasons = ?, answers = ?, degraded = ?, ended_at = ? WHERE id = ?"

        def write(execute: Execute) -> None:
            for episode_id, reasons, answers, degraded, ended_at in updates:
                execute(sql, (json.dumps(reasons), answers, degraded, ended_at, episode_id))

        self.store.transaction(write)

    def episodes(self, model: str | None = None) -> list[Episode]:
        clause, args = _where(model=model or None)
        rows = self.store.execute(
            "SELECT id, model, replica, started_at, ended_at, reasons, answers, degraded "
            f"FROM episodes{clause} ORDER BY id",
            args,
        )
        return [Episode(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows]
