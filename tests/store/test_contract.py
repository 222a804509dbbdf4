"""One storage contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
import time

from failsoft.config import PromotionSpec
from failsoft.shadow.evaluate import candidate_report
from failsoft.store import Store, open_store
from failsoft.store.base import PredictionRow
from failsoft.store.records import RecordQueue
from tests.helpers import queued


def rows(n: int, start: int = 0, model: str = "m", ts: float | None = None) -> list[PredictionRow]:
    t = time.time() if ts is None else ts
    return [
        (f"r{i}", f"q{i}", model, "1", "cpu", "live", i % 2 == 0, None if i % 2 else "timeout", [0.5], None,
         0.3, t + i * 0.001)
        for i in range(start, start + n)
    ]  # fmt: skip


def test_insert_is_idempotent_on_record_id(store: Store) -> None:
    assert store.insert_predictions(rows(50)) == 50
    assert store.insert_predictions(rows(60)) == 10, "the first 50 are already there"
    assert store.count_predictions() == 60
    assert store.count_predictions("m") == 60 and store.count_predictions("other") == 0


def test_iter_and_delete_by_time(store: Store) -> None:
    store.insert_predictions(rows(30, ts=1000.0))
    store.insert_predictions(rows(20, start=30, ts=5000.0, model="n"))
    got = [r for batch in store.iter_predictions(since=0, batch=7) for r in batch]
    assert [r[0] for r in got] == [f"r{i}" for i in range(50)], "oldest first, every row once"
    assert all(len(b) <= 7 for b in store.iter_predictions(batch=7))
    assert sum(len(b) for b in store.iter_predictions(since=4000)) == 20
    assert sum(len(b) for b in store.iter_predictions(model="n")) == 20
    first = got[0]
    assert first[6] in (True, 1) and first[7] == "timeout" and first[8] == "[0.5]" and first[9] is None
    assert store.delete_predictions_before(4000) == 30
    assert store.count_predictions() == 20


def test_health_changes_are_recorded_with_a_growing_revision(store: Store) -> None:
    assert store.state_revision() == 0 and store.load_states() == {}
    a = store.set_health("m", "quarantined", "psi over threshold", "monitor")
    b = store.set_health("m", "live", "restored", "alice")
    assert b.revision > a.revision and store.state_revision() == b.revision
    state = store.load_states()["m"]
    assert (state.health, state.reason, state.changed_by) == ("live", "restored", "alice")
    events = store.state_events("m")
    assert [(e.value, e.actor) for e in events] == [("live", "alice"), ("quarantined", "monitor")]


def test_migrations_run_once_and_concurrently_safe(store: Store) -> None:
    others = [open_store(store.url) for _ in range(3)]
    threads = [threading.Thread(target=o.connect) for o in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.insert_predictions(rows(3))
    for o in others:
        assert o.count_predictions() == 3
        o.close()


def test_a_record_for_several_requests_becomes_a_row_each(store: Store) -> None:
    """A shadow candidate's batch is queued as one record (request ids and answers as lists) and kept as
    one shadow call; each engine reads it back as a row per request, and a batch sent twice adds nothing."""
    queue = RecordQueue(1000, log_inputs=False)
    queued(queue, "q0", "m", "1", "cpu", "live", False, None, [0.5], None, 0.3)
    queued(
        queue, ["q0", "q1", "q2"], "m", "1", "cand", "shadow", False, None, [[0.1], [0.2], [0.3]], None, 1.5
    )
    queued(queue, ["q3"], "m", "1", "cand", "shadow", False, "timeout", [None], None, 20.0)
    payload, n = queue.take()
    assert n == 3, "three records on the request path"
    assert store.insert_json(payload) == 3, "a live row and two shadow calls"
    assert store.insert_json(payload) == 0, "a replay is recognised row by row"
    live = [r for b in store.iter_predictions() for r in b]
    shadow = [r for b in store.iter_predictions(shadow=True, batch=2) for r in b]
    assert len(live) == 1 and len(shadow) == 4, "read back a row per request"
    got = {(r[1], r[5]): r for r in live + shadow}
    assert [got[(f"q{i}", "shadow")][8] for i in range(3)] == ["[0.1]", "[0.2]", "[0.3]"]
    assert got[("q3", "shadow")][7] == "timeout" and got[("q3", "shadow")][8] == "null"
    assert got[("q0", "live")][4] == "cpu" and got[("q1", "shadow")][4] == "cand"
    assert got[("q2", "shadow")][10] == 1.5
    assert len({r[0] for r in got.values()}) == 5, "every row has its own record id"
    # the shadow report counts each call's requests
    r = candidate_report(store, "m", "cand", "cpu", PromotionSpec(min_shadow_s=0, min_labelled=0))
    assert (r.logged, r.answered, r.timeouts, r.errors) == (4, 3, 1, 0)
    assert r.failures == {"timeout": 1} and r.timeout_rate == 0.25
    assert r.compared == 1, "q0 is the one request answered by both"
    assert store.delete_predictions_before(time.time() + 60) == 3, "retention reaches shadow calls too"
    assert not [r for b in store.iter_predictions(shadow=True) for r in b]


def test_a_default_set_by_a_person_is_one_row_per_model_and_a_state_change(store: Store) -> None:
    before = store.state_revision()
    pinned = store.set_default("recs", "top10", '["a", "b"]', True, "alice", "source broken")
    assert pinned.revision > before and store.state_revision() == pinned.revision, "replicas will look"
    store.set_default("churn", "base", "0.2", True, "bob", "")
    again = store.set_default("recs", "top10", '["c"]', False, "bob", "source fixed")
    got = {(d.model, d.tier): d for d in store.load_defaults()}
    assert len(got) == 2 and got[("recs", "top10")] == again
    assert (again.value, again.pinned, again.set_by) == ('["c"]', False, "bob")
    assert got[("churn", "base")].pinned is True
    kinds = [e.kind for e in store.state_events("recs")]
    assert kinds[:2] == ["default_refreshed", "default_pinned"]


def test_episodes_start_and_are_tallied_many_in_one_transaction(store: Store) -> None:
    """The audit watch writes a tick's episodes at once (hundreds of models in fallback after traffic has
    cycled through a thousand): their ids in order, each tally where it belongs, one ended."""
    from failsoft.store.audits import AuditQueue

    audits = AuditQueue(store)
    models = [f"m{i:03d}" for i in range(300)]
    ids = audits.start_episodes(models, "replica-a", 1000.0)
    assert len(set(ids)) == 300
    calls = []
    transaction = store.transaction
    store.transaction = lambda fn: calls.append(1) or transaction(fn)  # type: ignore[method-assign]
    audits.update_episodes(
        [(e, {"timeout": i}, 10 + i, i, 1010.0 if i == 7 else None) for i, e in enumerate(ids)]
    )
    assert calls == [1], "one transaction for the tick"
    got = {e.model: e for e in audits.episodes()}
    assert [got[m].answers for m in models] == [10 + i for i in range(300)]
    assert got["m007"].reasons == {"timeout": 7} and got["m007"].ended_at == 1010.0
    assert got["m008"].ended_at is None and got["m008"].id == ids[8]
