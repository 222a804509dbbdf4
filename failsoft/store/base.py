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
from typing import Any, TypeVar

import msgspec

from failsoft.errors import FailsoftError

# One logged answer: (record_id, request_id, model, version, tier, role, degraded, reason, outputs, inputs,
# latency_ms, ts). role is "live" or "shadow"; outputs and inputs are any JSON value (inputs may be None);
# the database keeps them as JSON text. A batch travels as one JSON document, {"prefix": P, "base": B,
# "rows": [...]}, which PostgreSQL parses itself and the SQLite store decodes in the writer process (either
# way off the request path's CPU); a row whose record_id is null gets "P-(B + its position)", stable across
# replays.
PredictionRow = tuple[str, str, str, str, str, str, bool, str | None, Any, Any, float, float]
PREDICTION_COLUMNS = (
    "record_id", "request_id", "model", "version", "tier", "role", "degraded", "reason", "outputs", "inputs",
    "latency_ms", "ts",
)  # fmt: skip
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


@dataclass(frozen=True, slots=True)
class ModelState:
    """A model's shared state: what every replica must agree on."""

    model: str
    health: str
    reason: str
    changed_by: str
    changed_at: float
    revision: int


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


def migrations(dialect: str) -> list[tuple[int, list[str]]]:
    """Versioned schema changes, applied in order at start; each runs once per database."""
    serial = "BIGSERIAL PRIMARY KEY" if dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    real = "DOUBLE PRECISION" if dialect == "postgres" else "REAL"
    # SQLite: the primary key is the table (one B-tree per row written, not two)
    clustered = "" if dialect == "postgres" else " WITHOUT ROWID"
    ts_index = "USING brin (ts)" if dialect == "postgres" else "(ts)"
    if dialect == "postgres":
        # the two arrays unnested side by side: element i of each, once per call
        shadow_view = """CREATE OR REPLACE VIEW shadow_predictions AS
            SELECT c.record_id || '.' || (j.o - 1) AS record_id, j.request_id, c.model, c.version, c.tier,
            'shadow'::text AS role, false AS degraded, c.reason, j.outputs::text AS outputs,
            NULL::text AS inputs, c.latency_ms, c.ts
            FROM shadow_calls AS c, ROWS FROM (jsonb_array_elements_text(c.request_ids::jsonb),
            jsonb_array_elements(c.outputs::jsonb)) WITH ORDINALITY AS j(request_id, outputs, o)"""
    else:
        shadow_view = """CREATE VIEW IF NOT EXISTS shadow_predictions AS
            SELECT c.record_id || '.' || j.key AS record_id, j.value AS request_id, c.model, c.version,
            c.tier, 'shadow' AS role, 0 AS degraded, c.reason, c.outputs -> j.key AS outputs,
            NULL AS inputs, c.latency_ms, c.ts
            FROM shadow_calls AS c, json_each(c.request_ids) AS j"""
    if dialect == "postgres":
        # Every state change wakes the replicas listening (Store.listen) at once; polling stays the floor.
        notify = [
            """CREATE OR REPLACE FUNCTION failsoft_state_notify() RETURNS trigger AS $$
            BEGIN PERFORM pg_notify('failsoft_state', NEW.id::text); RETURN NULL; END; $$ LANGUAGE plpgsql""",
            "DROP TRIGGER IF EXISTS failsoft_state_notify ON state_events",
            """CREATE TRIGGER failsoft_state_notify AFTER INSERT ON state_events
            FOR EACH ROW EXECUTE FUNCTION failsoft_state_notify()""",
        ]
    else:
        notify = []  # one process's writes are seen by the others' polls
    return sorted(
        [
            (7, notify),
            (
                6,
                [
                    # A safe default a person set (pinned: kept until a person asks for a refresh), or the
                    # refresh that unpinned it; every replica applies it at its next state poll.
                    f"""CREATE TABLE IF NOT EXISTS defaults (
                    model TEXT NOT NULL, tier TEXT NOT NULL, value TEXT NOT NULL, pinned BOOLEAN NOT NULL,
                    set_by TEXT NOT NULL, set_at {real} NOT NULL, revision BIGINT NOT NULL,
                    PRIMARY KEY (model, tier))""",
                ],
            ),
            (
                5,
                [
                    f"""CREATE TABLE IF NOT EXISTS shadow_calls (
                    record_id TEXT PRIMARY KEY, model TEXT NOT NULL, version TEXT NOT NULL,
                    tier TEXT NOT NULL, reason TEXT, request_ids TEXT NOT NULL, outputs TEXT NOT NULL,
                    latency_ms {real} NOT NULL, ts {real} NOT NULL){clustered}""",
                    "CREATE INDEX IF NOT EXISTS shadow_calls_tier ON shadow_calls (model, tier, ts)",
                    f"CREATE INDEX IF NOT EXISTS shadow_calls_ts ON shadow_calls {ts_index}",
                    shadow_view,
                ],
            ),
            (
                4,
                [
                    # the monitor reads the labels received since its last look
                    "CREATE INDEX IF NOT EXISTS labels_received ON labels (received_at)",
                ],
            ),
            (
                3,
                [
                    # Delayed ground truth, one per request id (a batch request's label is a list); the
                    # request-id index joins it to the log.
                    f"""CREATE TABLE IF NOT EXISTS labels (
                    request_id TEXT PRIMARY KEY, label TEXT NOT NULL, label_time {real},
                    received_at {real} NOT NULL)""",
                    "CREATE INDEX IF NOT EXISTS predictions_request ON predictions (request_id)",
                    # Which tier is a model's primary now (absent: the first tier of portfolio.toml).
                    f"""CREATE TABLE IF NOT EXISTS deployments (
                    model TEXT PRIMARY KEY, live TEXT NOT NULL, changed_by TEXT NOT NULL,
                    changed_at {real} NOT NULL, revision BIGINT NOT NULL)""",
                    f"""CREATE TABLE IF NOT EXISTS flips (
                    id {serial}, model TEXT NOT NULL, action TEXT NOT NULL, from_tier TEXT NOT NULL,
                    to_tier TEXT NOT NULL, actor TEXT NOT NULL, reason TEXT NOT NULL, forced BOOLEAN NOT NULL,
                    evidence TEXT NOT NULL, ts {real} NOT NULL)""",
                    # Copies mirrored and dropped per replica (the log holds only the copies that ran).
                    f"""CREATE TABLE IF NOT EXISTS shadow_counters (
                    model TEXT NOT NULL, candidate TEXT NOT NULL, replica TEXT NOT NULL,
                    mirrored BIGINT NOT NULL, dropped BIGINT NOT NULL, since {real} NOT NULL,
                    updated_at {real} NOT NULL, PRIMARY KEY (model, candidate, replica))""",
                ],
            ),
            (
                2,
                [
                    f"""CREATE TABLE IF NOT EXISTS episodes (
                    id {serial}, model TEXT NOT NULL, replica TEXT NOT NULL, started_at {real} NOT NULL,
                    ended_at {real}, reasons TEXT NOT NULL, answers BIGINT NOT NULL,
                    degraded BIGINT NOT NULL)""",
                    f"""CREATE TABLE IF NOT EXISTS audit_items (
                    id {serial}, model TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL,
                    opened_at {real} NOT NULL, notified_at {real} NOT NULL, closed_at {real},
                    details TEXT NOT NULL)""",
                    # at most one open item per model and kind, however many replicas notice the same thing
                    "CREATE UNIQUE INDEX IF NOT EXISTS audit_items_open ON audit_items (model, kind) "
                    "WHERE status <> 'resolved'",
                    f"""CREATE TABLE IF NOT EXISTS audit_actions (
                    id {serial}, audit_id BIGINT, model TEXT NOT NULL, action TEXT NOT NULL,
                    actor TEXT NOT NULL, comment TEXT NOT NULL, details TEXT NOT NULL, ts {real} NOT NULL)""",
                ],
            ),
            (
                1,
                [
                    f"""CREATE TABLE IF NOT EXISTS predictions (
                    record_id TEXT PRIMARY KEY, request_id TEXT NOT NULL, model TEXT NOT NULL,
                    version TEXT NOT NULL, tier TEXT NOT NULL, role TEXT NOT NULL, degraded BOOLEAN NOT NULL,
                    reason TEXT, outputs TEXT NOT NULL, inputs TEXT, latency_ms {real} NOT NULL,
                    ts {real} NOT NULL){clustered}""",
                    # Rows arrive in time order: PostgreSQL keeps a BRIN index (a few pages, next to free to
                    # maintain); SQLite has none, so a B-tree. The request-id index for joining labels comes
                    # with the labels table.
                    f"CREATE INDEX IF NOT EXISTS predictions_ts ON predictions {ts_index}",
                    f"""CREATE TABLE IF NOT EXISTS model_state (
                    model TEXT PRIMARY KEY, health TEXT NOT NULL, reason TEXT NOT NULL,
                    changed_by TEXT NOT NULL,
                    changed_at {real} NOT NULL, revision BIGINT NOT NULL)""",
                    f"""CREATE TABLE IF NOT EXISTS state_events (
                    id {serial}, model TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
                    reason TEXT NOT NULL, actor TEXT NOT NULL, ts {real} NOT NULL)""",
                ],
            ),
        ]
    )


def state_event(
    execute: Execute, model: str, kind: str, value: str, reason: str, actor: str, ts: float
) -> int:
    """Record a shared state change (inside the transaction that makes it); its id is the revision every
    replica polls for, and on PostgreSQL its insert notifies them."""
    return int(
        execute(
            "INSERT INTO state_events (model, kind, value, reason, actor, ts) VALUES (?, ?, ?, ?, ?, ?) "
            "RETURNING id",
            [model, kind, value, reason, actor, ts],
        )[0][0]
    )


class Store(abc.ABC):
    """A database holding the prediction log and the shared model state."""

    url: str
    dialect: str

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

    def count_predictions(self, model: str | None = None) -> int:
        where, args = (" WHERE model = ?", [model]) if model else ("", [])
        return int(self.execute(f"SELECT count(*) FROM predictions{where}", args)[0][0])

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

    @abc.abstractmethod
    def delete_predictions_before(self, ts: float) -> int: ...

    def state_revision(self) -> int:
        """A number that grows with every state change (cheap: replicas poll it)."""
        return int(self.execute("SELECT coalesce(max(id), 0) FROM state_events")[0][0])

    def load_states(self) -> dict[str, ModelState]:
        rows = self.execute("SELECT model, health, reason, changed_by, changed_at, revision FROM model_state")
        return {r[0]: ModelState(*r) for r in rows}

    def set_health(self, model: str, health: str, reason: str, actor: str) -> ModelState:
        """Record a health change and its event atomically."""
        now = self.now()

        def write(execute: Execute) -> ModelState:
            rev = state_event(execute, model, "health", health, reason, actor, now)
            execute(
                "INSERT INTO model_state VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (model) DO UPDATE SET "
                "health = excluded.health, reason = excluded.reason, changed_by = excluded.changed_by, "
                "changed_at = excluded.changed_at, revision = excluded.revision",
                [model, health, reason, actor, now, rev],
            )
            return ModelState(model, health, reason, actor, now, rev)

        return self.transaction(write)

    def set_default(
        self, model: str, tier: str, value: str, pinned: bool, actor: str, reason: str
    ) -> DefaultState:
        """Record a safe default a person set (``pinned``) or refreshed, and its event, atomically."""
        now = self.now()

        def write(execute: Execute) -> DefaultState:
            kind = "default_pinned" if pinned else "default_refreshed"
            rev = state_event(execute, model, kind, value, reason, actor, now)
            execute(
                "INSERT INTO defaults VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model, tier) DO UPDATE SET "
                "value = excluded.value, pinned = excluded.pinned, set_by = excluded.set_by, "
                "set_at = excluded.set_at, revision = excluded.revision",
                [model, tier, value, pinned, actor, now, rev],
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
