"""The storage contract: what every store (SQLite, PostgreSQL) keeps and how it is asked.

Stores are synchronous and thread-safe; the request path never calls them. The prediction log is written
by a background writer thread (see log.py), model state is read and changed from threads of the control
loops. Every write is idempotent on its record id, so replaying a spill file twice changes nothing.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import msgspec

from failsoft.errors import FailsoftError
from failsoft.types import Reason

# who gave an answer: the model's live chain, or a shadow candidate (logged, never shown)
Role = Literal["live", "shadow"]

# A logged answer's outputs and inputs are any JSON value; the database keeps them as JSON text. A batch of
# PredictionRows travels as one JSON document, {"prefix": P, "base": B, "rows": [...]}, which PostgreSQL
# parses itself and the SQLite store decodes in the writer process (either way off the request path's
# CPU); a row whose record_id is null gets "P-(B + its position)", stable across replays.


class PredictionRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One record of the prediction log: an answer, or a shadow candidate's call answering several requests
    (``request_id`` and ``outputs`` then lists, item i answering request i). It travels as a JSON array in
    its fields' order (batches, spill files, journals), which are the table's columns."""

    record_id: str | None  # None: the database names it from its batch (prefix and position)
    request_id: str | list[str]
    model: str
    version: str
    tier: str
    role: Role
    degraded: bool
    reason: Reason | None
    outputs: Any
    inputs: Any  # None unless [store] log_inputs
    latency_ms: float
    ts: float


PREDICTION_COLUMNS: tuple[str, ...] = PredictionRow.__struct_fields__
# A shadow candidate's call answers many requests: it is kept as one row (request ids and outputs as JSON
# arrays, item i answering request i), and read a row per request through the view shadow_predictions,
# whose columns are PREDICTION_COLUMNS. Writing one row per call instead of one per request is what keeps
# mirroring cheap for the writer.
SHADOW_CALL_COLUMNS = (
    "record_id", "model", "version", "tier", "reason", "request_ids", "outputs", "latency_ms", "ts",
)  # fmt: skip


T = TypeVar("T")
Execute = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class StoreError(FailsoftError):
    """The store could not do what was asked."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the write; records go to the spill file."""


class StoreRejected(StoreError):
    """The database took the request and refused what it holds (a value it cannot store, a constraint):
    not an outage, so trying again later would fail again. The prediction log finds the records at fault
    and sets them aside (store/log.py)."""


class LogSink(Protocol):
    """What the log writer (store/log.py) writes to: a store, or a stream (store/stream.py)."""

    dialect: str

    def insert_json(self, *payloads: bytes) -> int: ...
    def delete_predictions_before(self, ts: float) -> int: ...
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ModelState:
    """A model's shared state: what every replica must agree on."""

    model: str
    health: str
    reason: str
    changed_by: str
    changed_at: float
    revision: int
    # when a "keep it out" quarantine ends (epoch seconds), None when no end is set
    kept_out_until: float | None = None


@dataclass(frozen=True, slots=True)
class DefaultState:
    """A safe default as a person left it, for every replica: the value (JSON text) and whether it is
    pinned (a person's value) or back to its source."""

    model: str
    tier: str
    value: str
    pinned: bool
    set_by: str
    set_at: float
    revision: int


@dataclass(frozen=True, slots=True)
class StateEvent:
    id: int
    model: str
    kind: str
    value: str
    reason: str
    actor: str
    ts: float


def record_state(
    execute: Execute,
    table: str,
    key: Sequence[str],
    row: dict[str, Any],
    event: tuple[str, str, str, str, str, float],
) -> int:
    """Upsert ``row`` into a shared-state table (``key``: its primary key columns) together with the state
    event that announces it, inside the caller's transaction. ``event`` is (model, kind, value, reason,
    actor, ts); its id is the revision every replica polls for (on PostgreSQL its insert notifies them),
    and it is stored as the row's ``revision``."""
    rev = int(
        execute(
            "INSERT INTO state_events (model, kind, value, reason, actor, ts) VALUES (?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            list(event),
        )[0][0]
    )
    cols = [*row, "revision"]
    updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in key)
    execute(
        f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
        [*row.values(), rev],
    )
    return rev


class LogReader(abc.ABC):
    """The prediction log as it is read: from a store's tables, or the lake's Parquet (store/lake_read.py),
    with the same columns and ``?`` placeholders."""

    url: str
    dialect: str

    @abc.abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement, ``?`` placeholders on every dialect; the rows it returns."""

    def count_predictions(self, model: str | None = None, shadow: bool = False) -> int:
        """Answers logged (a row per request), live or with ``shadow`` the shadow candidates'."""
        where, args = (" WHERE model = ?", [model]) if model else ("", [])
        table = "shadow_predictions" if shadow else "predictions"
        return int(self.execute(f"SELECT count(*) FROM {table}{where}", args)[0][0])

    def logged_models(self) -> list[str]:
        """The models with answers in the log."""
        return sorted(m for (m,) in self.execute("SELECT DISTINCT model FROM predictions"))

    def iter_predictions(
        self, since: float = 0.0, model: str | None = None, batch: int = 10_000, shadow: bool = False
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows with ts >= since, oldest first, in batches of at most ``batch`` (keyset pagination); the
        live answers, or with ``shadow`` the shadow candidates' (a row per request)."""
        cols = ", ".join(PREDICTION_COLUMNS)
        where = "(ts > ? OR (ts = ? AND record_id > ?))" + (" AND model = ?" if model else "")
        table = "shadow_predictions" if shadow else "predictions"
        sql = f"SELECT {cols} FROM {table} WHERE {where} ORDER BY ts, record_id LIMIT ?"
        last_ts, last_id = since, ""
        while True:
            rows = self.execute(sql, [last_ts, last_ts, last_id, *([model] if model else []), batch])
            if not rows:
                return
            yield rows
            last_ts, last_id = rows[-1][-1], rows[-1][0]


class Store(LogReader):
    """A database holding the prediction log and the shared model state."""

    @abc.abstractmethod
    def connect(self) -> None:
        """Open connections and apply pending migrations. Raises StoreUnavailable."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def insert_json(self, *payloads: bytes) -> int:
        """Write batch documents of prediction rows in one transaction, skipping record ids already present.
        Returns how many rows were new (a shadow call is one row). Raises StoreUnavailable."""

    def insert_predictions(self, rows: Sequence[PredictionRow]) -> int:
        """Rows with their own record ids (tests, imports)."""
        return self.insert_json(msgspec.json.encode({"prefix": "", "base": 0, "rows": rows}))

    @abc.abstractmethod
    def delete_predictions_before(self, ts: float) -> int: ...

    def state_revision(self) -> int:
        """A number that grows with every state change (cheap: replicas poll it)."""
        return int(self.execute("SELECT coalesce(max(id), 0) FROM state_events")[0][0])

    def load_states(self) -> dict[str, ModelState]:
        rows = self.execute(
            "SELECT model, health, reason, changed_by, changed_at, revision, kept_out_until FROM model_state"
        )
        return {r[0]: ModelState(*r) for r in rows}

    def set_health(
        self, model: str, health: str, reason: str, actor: str, kept_out_until: float | None = None
    ) -> ModelState:
        """Record a health change and its event atomically (``kept_out_until``: when a quarantine a person
        set for a while ends)."""
        now = self.now()

        def write(execute: Execute) -> ModelState:
            return self._health(execute, model, health, reason, actor, now, kept_out_until)

        return self.transaction(write)

    def end_keep_out(self, model: str, until: float, reason: str, actor: str) -> ModelState | None:
        """Bring a model kept out until ``until`` back to live, once: None when another replica (or a
        person) changed its state first."""
        now = self.now()

        def write(execute: Execute) -> ModelState | None:
            # Replicas racing here queue on the row; the later ones find its end already cleared.
            claimed = execute(
                "UPDATE model_state SET kept_out_until = NULL WHERE model = ? AND kept_out_until = ? "
                "RETURNING model",
                [model, until],
            )
            return self._health(execute, model, "live", reason, actor, now, None) if claimed else None

        return self.transaction(write)

    @staticmethod
    def _health(
        execute: Execute, model: str, health: str, reason: str, actor: str, now: float, until: float | None
    ) -> ModelState:
        row = {"model": model, "health": health, "reason": reason, "changed_by": actor, "changed_at": now,
               "kept_out_until": until}  # fmt: skip
        rev = record_state(
            execute, "model_state", ["model"], row, (model, "health", health, reason, actor, now)
        )
        return ModelState(model, health, reason, actor, now, rev, until)

    def set_default(
        self, model: str, tier: str, value: str, pinned: bool, actor: str, reason: str
    ) -> DefaultState:
        """Record a safe default a person set (``pinned``) or refreshed, and its event, atomically."""
        now = self.now()
        kind = "default_pinned" if pinned else "default_refreshed"
        row = {"model": model, "tier": tier, "value": value, "pinned": pinned, "set_by": actor, "set_at": now}

        def write(execute: Execute) -> DefaultState:
            rev = record_state(
                execute, "defaults", ["model", "tier"], row, (model, kind, value, reason, actor, now)
            )
            return DefaultState(model, tier, value, pinned, actor, now, rev)

        return self.transaction(write)

    def load_defaults(self) -> list[DefaultState]:
        rows = self.execute("SELECT model, tier, value, pinned, set_by, set_at, revision FROM defaults")
        return [DefaultState(m, t, v, bool(p), b, float(a), int(r)) for m, t, v, p, b, a, r in rows]

    def listen(self, changed: Callable[[], None], stopping: threading.Event) -> bool:
        """Call ``changed`` whenever any replica records a state change, until ``stopping`` is set
        (blocking: run it in a thread). False at once when this store cannot tell (replicas then poll)."""
        return False

    def announce_portfolio(self, digest: str, summary: str, actor: str) -> int:
        """A reload's new portfolio.toml (its SHA-256), as a state event every replica sees (PostgreSQL
        notifies them): each reloads its own file when that file is the same. Returns the event's id."""
        rows = self.execute(
            "INSERT INTO state_events (model, kind, value, reason, actor, ts) VALUES (?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            ["", "portfolio", digest, summary, actor, self.now()],
        )
        return int(rows[0][0])

    def last_portfolio(self) -> StateEvent | None:
        """The latest portfolio.toml a replica reloaded (``announce_portfolio``), or None."""
        rows = self.execute(
            "SELECT id, model, kind, value, reason, actor, ts FROM state_events WHERE kind = ? "
            "ORDER BY id DESC LIMIT 1",
            ["portfolio"],
        )
        return StateEvent(*rows[0]) if rows else None

    def state_events(self, model: str | None = None, limit: int = 100) -> list[StateEvent]:
        where, args = (" WHERE model = ?", [model]) if model else ("", [])
        rows = self.execute(
            f"SELECT id, model, kind, value, reason, actor, ts FROM state_events{where} "
            "ORDER BY id DESC LIMIT ?",
            [*args, limit],
        )
        return [StateEvent(*r) for r in rows]

    @abc.abstractmethod
    def transaction(self, fn: Callable[[Execute], T]) -> T:
        """Run ``fn`` in one transaction; it gets an ``execute(sql, args)`` (``?`` placeholders) for it."""

    @abc.abstractmethod
    def execute(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement in its own transaction, ``?`` placeholders on every dialect; the rows it returns
        (use RETURNING for ids). For the control loops' small tables (episodes, audits)."""

    def now(self) -> float:
        return time.time()
