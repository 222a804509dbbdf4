"""The crash journal: a serving process killed outright loses no answered record."""

from __future__ import annotations

import http.client
import json
import sys
import time
from pathlib import Path

from failsoft.demo.procs import Proc
from failsoft.store import open_store
from failsoft.store.journal import Journal, orphans
from failsoft.store.records import RecordQueue
from tests.helpers import queued
from tests.portfolios import default_tier, model, python_tier, write


def test_segments_are_dropped_once_safe_and_orphans_come_back_as_batches(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    queue = RecordQueue(1000, False, batch_size=10)
    queue.journal = Journal(folder, queue.prefix)
    for i in range(25):
        queued(queue, f"r{i}", "m", "1", "t", "live", False, None, [i], None, 0.1)
    assert list(orphans(folder)) == [], "a live process's open segment is not anyone else's"
    queue.take()  # records 1-10 taken; say they are safe
    queue.journal.release(queue.next_taken)
    assert len(list(folder.glob("*.jsonl"))) == 1, "the open segment stays while it holds unsafe records"
    # the process dies: its file is an orphan, and every record comes back with its number
    queue.journal.close(all_safe=False)
    found = list(orphans(folder))
    assert len(found) == 1
    paths, batches = found[0]
    assert paths[0].parent == folder
    docs = [json.loads(b) for b in batches]
    # the batch taken comes back as it was sent (a stream names its message by it), the rest in one run
    assert [(d["prefix"], d["base"], len(d["rows"])) for d in docs] == [
        (queue.prefix, 1, 10),
        (queue.prefix, 11, 15),
    ]
    assert docs[0]["rows"][3][1] == "r3"


def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "journal"
    journal = Journal(folder, "abc")
    journal.write(b'[1,null,"a"]\n')
    journal.write(b'[2,null,"b"]\n')
    journal.write(b'[3,null,"c')  # the process died mid-write
    journal.close(all_safe=False)
    [(_, batches)] = list(orphans(folder))
    assert [json.loads(b)["rows"] for b in batches] == [[[None, "a"], [None, "b"]]]


def answered_then_killed(tmp_path: Path, journal: bool, n: int = 300) -> tuple[set[str], Path]:
    """Answer ``n`` requests, kill -9 the gateway at once, start it again on the same folder (it recovers
    what it can), stop it cleanly; the answered ids and the database."""
    state = tmp_path / f"state-{journal}"
    toml = tmp_path / f"p-{journal}.toml"
    # a long flush window: the records a crash would take with it
    store = {"flush_ms": 1000, "journal": journal}
    m = model(python_tier("py", "tests.helpers:score"), default_tier(0.5), deadline_ms=200)
    write(toml, {"m": m}, data_dir=str(state), store=store)
    args = [sys.executable, "-m", "failsoft.cli", "serve", str(toml), "--log-level", "warning"]
    gw = Proc(args, "/v2/health/ready", tmp_path / "gw.log").start()
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    answered = set()
    for i in range(n):
        body = json.dumps({"id": f"k{i}", "inputs": {"x": 0.5}})
        conn.request("POST", "/v1/models/m/predict", body, {"content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            answered.add(f"k{i}")
    conn.close()
    gw.kill()
    again = Proc(args, "/v2/health/ready", tmp_path / "gw.log", port=gw.port).start()
    time.sleep(0.5)
    again.stop()
    return answered, state / "failsoft.db"


def stored(db: Path) -> set[str]:
    store = open_store(f"sqlite:///{db}")
    try:
        return {r[1] for batch in store.iter_predictions() for r in batch}
    finally:
        store.close()


def test_kill_9_loses_no_answered_record_with_the_journal(tmp_path: Path) -> None:
    answered, db = answered_then_killed(tmp_path, journal=True)
    assert len(answered) == 300
    assert answered <= stored(db), f"lost {len(answered - stored(db))} answered records"
    assert not list((db.parent / "journal").glob("*.jsonl"))[1:], "recovered segments are deleted"


def test_the_log_writer_writes_out_what_it_was_sent_when_the_serving_process_dies(tmp_path: Path) -> None:
    """Its acknowledgements to a dead serving process failed (broken pipe) and killed its writing thread:
    batches already handed over were lost too, not only what the serving process held."""
    import subprocess

    from failsoft.store.frames import HEADER

    db = tmp_path / "w.db"
    options = json.dumps(
        {"batch_size": 1000, "flush_s": 0.2, "retention_s": None, "spill_max_bytes": 1 << 30}
    )
    writer = subprocess.Popen(
        [sys.executable, "-m", "failsoft.store.writer", f"sqlite:///{db}", str(tmp_path / "spill"), options],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdout.close()  # the serving process is gone: nobody reads the acknowledgements
    queue = RecordQueue(100_000, False, batch_size=100)
    for i in range(2000):
        queued(queue, f"w{i}", "m", "1", "t", "live", False, None, [0.5], None, 0.1)
    seq = 0
    while queue:
        payload, n = queue.take()
        seq += 1
        writer.stdin.write(HEADER.pack(seq, n, len(payload)) + payload)
    writer.stdin.close()
    assert writer.wait(60) == 0
    assert len(stored(db)) == 2000
