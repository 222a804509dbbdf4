"""What the shadow candidates did, as the store has it: their calls (``shadow_calls``, read a row per
request through the view ``shadow_predictions``), the copies each replica mirrored and dropped
(``shadow_counters``), and the live answers and labels they are compared with."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from failsoft.store.base import Execute, LogReader, Store

__all__ = ["ShadowEvidence", "ShadowRecords"]

LATENCY_SAMPLE = 100_000
AGREEMENT_SAMPLE = 20_000


class ShadowEvidence(msgspec.Struct, frozen=True):
    """A candidate's record since the model's last flip (``since``); outputs and labels as stored."""

    since: float
    logged: int  # requests logged for the candidate (answered or not)
    answered: int
    timeouts: int
    first: float | None  # when its first logged call was made
    failures: dict[str, int]  # reason -> requests
    mirrored: int
    dropped: int
    latency_ms: list[float]  # its answered calls, newest first
    live_latency_ms: list[float]  # the live primary's answers, newest first
    pairs: list[tuple[Any, Any]]  # (live outputs, candidate outputs) on the same requests, newest first
    labelled: list[tuple[Any, Any, Any]]  # (label, live outputs, candidate outputs)


class ShadowRecords:
    def __init__(self, store: Store, log: LogReader | None = None) -> None:
        self.store = store
        # where the answers are read: the store's tables, or the lake's (flips and counters stay in the store)
        self.log = log or store

    def save_counters(
        self, rows: Sequence[tuple[str, str, int, int]], replica: str, since: float, now: float
    ) -> None:
        """This replica's copies mirrored and dropped per (model, candidate)."""

        def write(execute: Execute) -> None:
            for m, c, n, d in rows:
                execute(
                    "INSERT INTO shadow_counters VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (model, candidate, replica) DO UPDATE SET mirrored = excluded.mirrored, "
                    "dropped = excluded.dropped, updated_at = excluded.updated_at",
                    [m, c, replica, n, d, since, now],
                )

        self.store.transaction(write)

    def evidence(self, model: str, candidate: str, live: str) -> ShadowEvidence:
        store, logged = self.store, self.log
        since = float(store.execute("SELECT max(ts) FROM flips WHERE model = ?", [model])[0][0] or 0.0)
        ok = "reason IS NULL"
        # Counted a call at a time (its requests are its array's length), not through the per-request view.
        n = (
            "jsonb_array_length(request_ids::jsonb)"
            if logged.dialect == "postgres"
            else "json_array_length(request_ids)"
        )
        count, answered, timeouts, first = logged.execute(
            f"SELECT sum({n}), sum(CASE WHEN {ok} THEN {n} ELSE 0 END), "
            f"sum(CASE WHEN reason = 'timeout' THEN {n} ELSE 0 END), min(ts) "
            "FROM shadow_calls WHERE model = ? AND tier = ? AND ts >= ?",
            [model, candidate, since],
        )[0]
        failures = {
            str(r[0]): int(r[1])
            for r in logged.execute(
                f"SELECT reason, sum({n}) FROM shadow_calls WHERE model = ? AND tier = ? "
                "AND ts >= ? AND reason IS NOT NULL GROUP BY reason",
                [model, candidate, since],
            )
        }
        mirrored, dropped = store.execute(
            "SELECT coalesce(sum(mirrored), 0), coalesce(sum(dropped), 0) FROM shadow_counters "
            "WHERE model = ? AND candidate = ?",
            [model, candidate],
        )[0]
        latency = logged.execute(
            "SELECT latency_ms FROM shadow_predictions WHERE model = ? AND tier = ? "
            f"AND ts >= ? AND {ok} ORDER BY ts DESC LIMIT {LATENCY_SAMPLE}",
            [model, candidate, since],
        )
        live_latency = logged.execute(
            "SELECT latency_ms FROM predictions WHERE model = ? AND role = 'live' AND tier = ? "
            f"AND ts >= ? ORDER BY ts DESC LIMIT {LATENCY_SAMPLE}",
            [model, live, since],
        )
        join = (
            "FROM shadow_predictions sh JOIN predictions lv ON lv.request_id = sh.request_id "
            "AND lv.model = sh.model AND lv.role = 'live' AND lv.tier = ? AND lv.degraded = ? "
            "WHERE sh.model = ? AND sh.tier = ? AND sh.reason IS NULL AND sh.ts >= ?"
        )
        args = [live, False, model, candidate, since]
        pairs = logged.execute(
            f"SELECT lv.outputs, sh.outputs {join} ORDER BY sh.ts DESC LIMIT {AGREEMENT_SAMPLE}", args
        )
        with_labels = join.replace("WHERE", "JOIN labels l ON l.request_id = sh.request_id WHERE", 1)
        labelled = logged.execute(f"SELECT l.label, lv.outputs, sh.outputs {with_labels}", args)
        return ShadowEvidence(
            since=since,
            logged=int(count or 0),
            answered=int(answered or 0),
            timeouts=int(timeouts or 0),
            first=None if first is None else float(first),
            failures=failures,
            mirrored=int(mirrored),
            dropped=int(dropped),
            latency_ms=[float(r[0]) for r in latency],
            live_latency_ms=[float(r[0]) for r in live_latency],
            pairs=[(_json(a), _json(b)) for a, b in pairs],
            labelled=[(_json(a), _json(b), _json(c)) for a, b, c in labelled],
        )


def _json(text: Any) -> Any:
    return msgspec.json.decode(text) if isinstance(text, str | bytes) else text
