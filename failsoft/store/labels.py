"""Delayed ground truth, one label per request id (a batch request's label is a list), joined to the log by
request id. A label sent again replaces the earlier one only when it differs (its ``received_at`` moves
then, so the monitor sees the correction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from failsoft.store.base import Execute, Store

__all__ = ["LabelRow", "Labels"]

# (request_id, label as JSON text, label_time, received_at)
LabelRow = tuple[str, str, float, float]


class Labels:
    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, rows: Sequence[LabelRow]) -> None:
        """Upsert ``rows`` in one transaction."""

        def write(execute: Execute) -> None:
            for row in rows:
                execute(
                    "INSERT INTO labels VALUES (?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET "
                    "label = excluded.label, label_time = excluded.label_time, "
                    "received_at = excluded.received_at WHERE labels.label <> excluded.label",
                    list(row),
                )

        self.store.transaction(write)

    def since(self, mark: float, limit: int = 100_000) -> tuple[dict[str, Any], float]:
        """Labels received after ``mark`` (an indexed range: the cost follows the labels that arrive), by
        request id, and the new mark."""
        rows = self.store.execute(
            "SELECT request_id, label, received_at FROM labels WHERE received_at > ? "
            "ORDER BY received_at LIMIT ?",
            [mark, limit],
        )
        if not rows:
            return {}, mark
        found = {rid: msgspec.json.decode(y) if isinstance(y, str | bytes) else y for rid, y, _ in rows}
        return found, max(float(r[2]) for r in rows)
