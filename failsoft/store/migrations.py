"""The database schema: versioned changes applied in order at start, each once per database."""

from __future__ import annotations


def migrations(dialect: str) -> list[tuple[int, list[str]]]:
    """Versioned schema changes, applied in order at start; each runs once per database."""
    serial = "BIGSERIAL PRIMARY KEY" if dialect == "postgres" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    real = "DOUBLE PRECISION" if dialect == "postgres" else "REAL"
    # SQLite: the primary key is the table (one B-tree per row written, not two)
    clustered = "" if dialect == "postgres" else " WITHOUT ROWID"
    if_absent = "IF NOT EXISTS " if dialect == "postgres" else ""
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
            (
                8,
                [
                    # When a "keep it out" quarantine ends (epoch seconds; NULL: no end set). Kept with the
                    # state, so every replica, and one started during the period, ends it on time.
                    f"ALTER TABLE model_state ADD COLUMN {if_absent}kept_out_until {real}",
                ],
            ),
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
