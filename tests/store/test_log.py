"""The prediction log: batched, off the hot path, and nothing lost or doubled when the database fails."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from failsoft.store import open_store
from failsoft.store.base import PredictionRow
from failsoft.store.log import PredictionLog
from failsoft.store.records import RecordQueue, one_each
from failsoft.store.spill import SpillFile
from tests.helpers import queued
from tests.store.conftest import PrivatePostgres

# As the serving process does: records queued in a RecordQueue, sent to the engine as encoded batches.
QUEUES: dict[int, RecordQueue] = {}


def make_log(url: str, tmp_path: Path, log_inputs: bool = False, **kw: object) -> PredictionLog:
    spill = SpillFile.claim(tmp_path / "spill", int(kw.pop("spill_bytes", 1 << 30)))  # type: ignore[call-overload]
    log = PredictionLog(open_store(url), spill, flush_s=0.02, **kw)  # type: ignore[arg-type]
    QUEUES[id(log)] = RecordQueue(1_000_000, log_inputs, batch_size=int(kw.get("batch_size", 1000)))  # type: ignore[call-overload]
    log.start()
    return log


def feed(log: PredictionLog, n: int, start: int = 0) -> None:
    queue = QUEUES[id(log)]
    for i in range(start, start + n):
        queued(queue, f"q{i}", "m", "1", "cpu", "live", False, None, [0.1 * (i % 10)], {"x": i}, 0.2)
    while queue:
        payload, count = queue.take()
        log.append_batch(payload, count, lambda _: None)


def test_every_record_lands_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    log = make_log(url, tmp_path, batch_size=100)
    feed(log, 2500)
    assert log.flush()
    log.stop()
    store = open_store(url)
    assert store.count_predictions() == 2500
    assert log.written == 2500 and log.spilled == 0 and log.dropped == 0
    assert next(iter(store.iter_predictions()))[0][9] is None, "inputs are not kept unless asked"


def test_locked_sqlite_spills_and_replays_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "f.db"
    url = f"sqlite:///{db}"
    open_store(url).connect()
    log = make_log(url, tmp_path, batch_size=50, log_inputs=True)
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the file: every write fails
    feed(log, 400)
    time.sleep(0.5)
    assert log.spilled > 0 and not log.store_up and log.spill.size > 0
    blocker.execute("COMMIT")
    feed(log, 100, start=400)
    deadline = time.monotonic() + 10
    while (log.spill.size or log.buffered) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.flush()
    log.stop()
    store = open_store(url)
    assert store.count_predictions() == 500
    ids = [r[1] for b in store.iter_predictions() for r in b]
    assert len(ids) == len(set(ids)) == 500
    assert log.spill.size == 0 and log.replayed == log.spilled


def test_replay_after_a_crash_mid_replay_writes_nothing_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(url)
    store.connect()
    spill = SpillFile(tmp_path / "spill" / "predictions-1.jsonl", 1 << 20)
    rows: list[PredictionRow] = [
        (f"r{i}", f"q{i}", "m", "1", "cpu", "live", False, None, [1], None, 0.1, 1000.0 + i)
        for i in range(30)
    ]
    spill.append(msgspec.json.encode({"prefix": "", "base": 0, "rows": rows[:15]}))
    spill.append(msgspec.json.encode({"prefix": "", "base": 0, "rows": rows[15:]}))
    store.insert_predictions(rows[:20])  # a replay that stopped two thirds of the way
    with spill.path.open("ab") as fh:
        fh.write(b'["torn')  # and a torn last line
    log = make_log(url, tmp_path)  # claims the same spill slot, replays it at its first write
    feed(log, 1)
    assert log.flush()
    log.stop()
    assert store.count_predictions() == 31
    assert log.spill.torn_lines == 1


def test_bounded_buffer_drops_instead_of_blocking() -> None:
    queue = RecordQueue(max_buffer=100, log_inputs=False)  # nothing drains it
    for i in range(1000):
        queued(queue, f"q{i}", "m", "1", "cpu", "live", False, None, 0.5, None, 0.2)
    assert len(queue) == 100 and queue.dropped == 900
    queue.held_elsewhere = 100  # sent to a writer, not yet acknowledged: still counts
    queue.take()
    queued(queue, "late", "m", "1", "cpu", "live", False, None, 0.5, None, 0.2)
    assert queue.dropped == 901


def test_spill_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")  # a database path under a file: every write fails
    log = make_log(f"sqlite:///{tmp_path / 'a-file' / 'f.db'}", tmp_path, spill_bytes=20_000, batch_size=10)
    feed(log, 1000)
    assert log.flush()
    log.stop()
    assert log.spill.size <= 20_000
    assert log.spilled + log.dropped == 1000 and log.dropped > 0


def test_postgres_stopped_and_started(tmp_path: Path, private_pg: PrivatePostgres) -> None:
    log = make_log(private_pg.url, tmp_path, batch_size=50)
    feed(log, 200)
    assert log.flush() and log.store_up
    private_pg.stop()
    stop = threading.Event()

    def producer() -> None:
        i = 200
        while not stop.is_set():
            feed(log, 10, start=i)
            i += 10
            time.sleep(0.005)
        producer.count = i  # type: ignore[attr-defined]

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(1.5)
    assert not log.store_up and log.spilled > 0
    private_pg.start()
    time.sleep(1.0)
    stop.set()
    t.join()
    deadline = time.monotonic() + 15
    while (log.spill.size or not log.store_up) and time.monotonic() < deadline:
        feed(log, 0)
        time.sleep(0.1)
    assert log.flush()
    log.stop()
    store = open_store(private_pg.url)
    total = producer.count  # type: ignore[attr-defined]
    assert store.count_predictions() == total
    ids = [r[1] for b in store.iter_predictions() for r in b]
    assert len(ids) == len(set(ids)) == total
    store.close()


@pytest.mark.parametrize("n", [1, 3])
def test_replicas_on_one_folder_get_their_own_spill(tmp_path: Path, n: int) -> None:
    spills = [SpillFile.claim(tmp_path, 1000) for _ in range(n)]
    assert len({s.path for s in spills}) == n
    spills[0].release()
    again = SpillFile.claim(tmp_path, 1000)
    assert again.path == spills[0].path, "a released slot is taken again"
    for s in [again, *spills[1:]]:
        s.release()


def test_retention_deletes_what_is_older_than_the_period(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    store = open_store(url)
    store.connect()
    old = time.time() - 40 * 86400
    store.insert_predictions(
        [(f"old{i}", "q", "m", "1", "cpu", "live", False, None, 1, None, 0.1, old) for i in range(10)]
    )
    store.close()
    log = make_log(url, tmp_path, retention_s=30 * 86400)
    feed(log, 5)
    assert log.flush()
    feed(log, 1)  # the first cycle with the store up runs the retention pass
    assert log.flush()
    log.stop()
    store = open_store(url)
    assert store.count_predictions() == 6, "the 40-day-old rows are gone, the new ones stay"
    store.close()


def feed_ids(log: PredictionLog, ids: list[str], **values: object) -> None:
    queue = QUEUES[id(log)]
    for request_id in ids:
        outputs = values.get("outputs", [0.5])
        queued(queue, request_id, "m", "1", "cpu", "live", False, None, outputs, {"x": 1}, 0.2)
    while queue:
        payload, count = queue.take()
        log.append_batch(payload, count, lambda _: None)


def clean_pg(url: str) -> None:
    store = open_store(url)
    store.connect()
    store._locked(lambda c: c.execute("TRUNCATE predictions, shadow_calls"))  # type: ignore[attr-defined]
    store.close()


def stored_ids(url: str) -> set[str]:
    store = open_store(url)
    try:
        return {r[1] for batch in store.iter_predictions() for r in batch}
    finally:
        store.close()


def test_postgres_refusing_a_record_sets_it_aside_and_writes_the_rest(tmp_path: Path, pg_url: str) -> None:
    """jsonb refuses \\u0000: before, the batch was taken for an outage and spilled, and every later write
    replayed the poisoned spill first and failed again, for good."""
    clean_pg(pg_url)
    log = make_log(pg_url, tmp_path, batch_size=100, log_inputs=True)
    ids = [f"ok{i}" for i in range(40)]
    ids[17] = "bad\x00one"
    ids[33] = "bad\x00two"
    feed_ids(log, ids)
    assert log.flush()
    assert log.store_up and log.spilled == 0
    feed_ids(log, [f"later{i}" for i in range(10)])
    assert log.flush()
    log.stop()
    stored = stored_ids(pg_url)
    assert stored == {i for i in ids if "\x00" not in i} | {f"later{i}" for i in range(10)}
    assert log.dead_lettered == 2 and log.written == 48
    lines = [msgspec.json.decode(x) for x in log.dead_letter_path.read_bytes().splitlines()]
    assert [line["batch"]["rows"][0][1] for line in lines] == ["bad\x00one", "bad\x00two"]
    assert all("\\u0000" in line["error"] or "0x00" in line["error"] or "u0000" in line["error"]
               for line in lines)  # fmt: skip


def test_a_poisoned_spill_is_replayed_around_the_bad_record(tmp_path: Path, pg_url: str) -> None:
    clean_pg(pg_url)
    queue = RecordQueue(1000, False, batch_size=1000)
    for request_id in ("s1", "s\x002", "s3"):
        queued(queue, request_id, "m", "1", "cpu", "live", False, None, [0.5], None, 0.2)
    spill = SpillFile.claim(tmp_path / "spill", 1 << 30)
    spill.append(queue.take()[0])  # what an earlier process left after taking it for an outage
    spill.release()
    log = make_log(pg_url, tmp_path)
    feed_ids(log, ["new"])
    assert log.flush()
    log.stop()
    stored = stored_ids(pg_url)
    assert stored == {"s1", "s3", "new"} and log.dead_lettered == 1 and log.spill.size == 0


def test_a_record_no_json_can_hold_is_logged_in_a_safe_form(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    log = make_log(url, tmp_path)
    circular: list[object] = []
    circular.append(circular)
    feed_ids(log, ["fine", "sur\ud800rogate"])
    feed_ids(log, ["loop"], outputs=circular)
    assert log.flush()
    log.stop()
    assert stored_ids(url) == {"fine", "sur\ufffdrogate", "loop"}
    assert QUEUES[id(log)].normalised == 2


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(alphabet=',[]{}"ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(",a", max_size=2), inner, max_size=2),
    max_leaves=6,
)


@given(st.lists(json_values, max_size=12))
def test_a_calls_answers_encoded_at_once_read_as_a_list_per_request(outputs: list[object]) -> None:
    want = msgspec.json.encode([[v] for v in outputs])
    assert msgspec.json.encode(one_each(outputs)) == want


def test_a_shadow_call_made_safe_keeps_its_answers(tmp_path: Path) -> None:
    """A request id no store takes (a lone surrogate) makes its call's record be normalised: the
    answers, already JSON, are kept as they are."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    log = make_log(url, tmp_path)
    queue = QUEUES[id(log)]
    ids = ["a", "sur\ud800rogate", "c"]
    queued(queue, ids, "m", "1", "cand", "shadow", False, None, one_each([0.25, 0.5, 0.75]), None, 1.0)
    payload, count = queue.take()
    log.append_batch(payload, count, lambda _: None)
    assert log.flush()
    log.stop()
    assert queue.normalised == 1
    with contextlib.closing(sqlite3.connect(tmp_path / "f.db")) as conn:
        sql = "SELECT request_id, outputs FROM shadow_predictions ORDER BY request_id"
        rows = conn.execute(sql).fetchall()
    assert rows == [("a", "[0.25]"), ("c", "[0.75]"), ("sur\ufffdrogate", "[0.5]")]


def test_a_batch_the_typed_reading_refuses_is_read_the_generic_way(tmp_path: Path) -> None:
    """A record that does not fit the typed reading (here a request id that is a number, from a caller of
    the Python API) has its batch read as plain JSON: every record lands, with the same text as when read
    typed."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    log = make_log(url, tmp_path, log_inputs=True)
    queue = QUEUES[id(log)]
    for tag in ("typed", "generic"):
        queued(queue, f"{tag}-live", "m", "1", "cpu", "live", False, None, [0.5], {"x": 1}, 0.3)
        queued(queue, f"{tag}-none", "m", "1", "cpu", "live", False, None, [0.25], None, 0.3)
        queued(
            queue, [f"{tag}-c", f"{tag}-d"], "m", "1", "cand", "shadow", False, None, [[1], [2]], None, 0.1
        )
        if tag == "generic":
            queued(queue, 7, "m", "1", "cpu", "live", False, None, [0.75], None, 0.3)
        payload, count = queue.take()
        log.append_batch(payload, count, lambda _: None)
    assert log.flush()
    log.stop()
    with contextlib.closing(sqlite3.connect(tmp_path / "f.db")) as conn:
        sql = "SELECT request_id, outputs, inputs FROM predictions ORDER BY request_id"
        live = conn.execute(sql).fetchall()
        sql = "SELECT request_id, outputs FROM shadow_predictions ORDER BY request_id"
        shadow = conn.execute(sql).fetchall()
    assert live == [
        ("7", "[0.75]", None),
        ("generic-live", "[0.5]", '{"x":1}'), ("generic-none", "[0.25]", None),
        ("typed-live", "[0.5]", '{"x":1}'), ("typed-none", "[0.25]", None),
    ]  # fmt: skip
    assert shadow == [("generic-c", "[1]"), ("generic-d", "[2]"), ("typed-c", "[1]"), ("typed-d", "[2]")]


async def test_the_flusher_survives_a_failure_and_keeps_logging(tmp_path: Path) -> None:
    """An exception in the flusher task used to end it without a word: every later answer went unlogged."""
    from failsoft.store.log_client import ProcessLog

    url = f"sqlite:///{tmp_path / 'f.db'}"
    plog = ProcessLog(url, tmp_path / "spill", flush_s=0.02)
    await plog.start()
    real_take, calls = plog.records.take, {"n": 0}

    def flaky() -> tuple[bytes, int]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("a bug of ours")
        return real_take()

    plog.records.take = flaky  # type: ignore[method-assign]
    for i in range(10):
        queued(plog.records, f"f{i}", "m", "1", "t", "live", False, None, [0.5], None, 0.1)
    while plog.flusher_errors == 0:
        await asyncio.sleep(0.01)
    for i in range(10, 20):
        queued(plog.records, f"f{i}", "m", "1", "t", "live", False, None, [0.5], None, 0.1)
    assert await plog.flush()
    await plog.stop()
    ids = stored_ids(url)
    assert {f"f{i}" for i in range(10, 20)} <= ids and plog.flusher_errors == 1


def test_the_writers_reading_has_the_records_columns() -> None:
    """The writer reads a batch typed (outputs and inputs as the JSON they came as): the same fields, in
    the same order, as the record the request path queues."""
    from failsoft.store.base import PREDICTION_COLUMNS, PredictionRow
    from failsoft.store.records import _Record

    assert _Record.__struct_fields__ == PREDICTION_COLUMNS == PredictionRow.__struct_fields__
