"""The prediction log on NATS JetStream and the lake landed from it, against a private nats-server (a free
loopback port, its own store folder): CloudEvents, duplicates dropped by message id, an outage spilled and
replayed, a gateway killed with kill -9, a lander dying mid-flush, and the lake read as the database is."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from failsoft.demo.procs import Proc
from failsoft.store import open_store
from failsoft.store.lake import Lake, run_land
from failsoft.store.lake_read import LakeLog
from failsoft.store.log import PredictionLog
from failsoft.store.records import RecordQueue
from failsoft.store.spill import SpillFile
from failsoft.store.stream import StreamLog, events
from tests.helpers import queued
from tests.natsserver import NatsServer
from tests.portfolios import default_tier, model, python_tier, write

SUBJECT = "failsoft.predictions"


@pytest.fixture
def nats_server(tmp_path: Path) -> Any:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


def batches(n: int, per: int = 100, model_name: str = "m", shadow_every: int = 0) -> list[bytes]:
    queue = RecordQueue(1_000_000, True, batch_size=per)
    for i in range(n):
        queued(queue, f"r{i}", model_name, "1", "cpu", "live", False, None, [i / n], [{"x": i}], 0.5)
        if shadow_every and i % shadow_every == 0:
            queued(
                queue, [f"r{i}"], model_name, "1", "cand", "shadow", False, None, [[i / n + 0.01]], None, 2.0
            )
    out = []
    while queue:
        out.append(queue.take()[0])
    return out


def stream_events(url: str, stream: str = "FAILSOFT_PREDICTIONS") -> list[dict[str, Any]]:
    """Every event in the stream, in order, read by an ephemeral consumer."""

    async def read() -> list[dict[str, Any]]:
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe(f"{SUBJECT}.>", stream=stream)
        found: list[dict[str, Any]] = []
        while True:
            try:
                msgs = await sub.fetch(500, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                break
            for msg in msgs:
                doc = json.loads(msg.data)
                found += doc if isinstance(doc, list) else [doc]
        await nc.close()
        return found

    return asyncio.run(read())


def stream_ids(url: str) -> list[str]:
    return [e["data"]["record_id"] for e in stream_events(url)]


def test_answers_are_cloudevents_with_the_log_record_as_data() -> None:
    [payload] = batches(2, shadow_every=2)
    live, shadow, live2 = events(payload)
    doc = json.loads(msgspec.json.encode(live))
    assert {k: doc[k] for k in ("specversion", "id", "source", "type", "subject", "datacontenttype")} == {
        "specversion": "1.0", "id": "r0", "source": "failsoft/m", "type": "io.failsoft.prediction",
        "subject": "m", "datacontenttype": "application/json",
    }  # fmt: skip
    assert doc["time"].endswith("Z") and doc["time"][:4].isdigit()
    assert doc["data"]["outputs"] == [0.0] and doc["data"]["inputs"] == [{"x": 0}]
    assert doc["data"]["record_id"].endswith("-1")
    assert live2.type == "io.failsoft.prediction"
    call = json.loads(msgspec.json.encode(shadow))
    assert call["type"] == "io.failsoft.shadow" and call["id"] == call["data"]["record_id"]
    assert call["data"]["request_id"] == ["r0"] and call["data"]["role"] == "shadow"


@pytest.mark.parametrize("mode", ["batch", "single"])
def test_each_record_is_in_the_stream_once_however_often_it_is_published(nats_server: Any, mode: str) -> None:
    sink = StreamLog(nats_server.url, {"events": mode, "retention_s": 86400.0, "duplicate_window_s": 600.0})
    try:
        sent = batches(250, per=100)
        assert sink.insert_json(*sent) == 250
        assert sink.insert_json(sent[1]) == 0, "a batch published again is dropped by its message id"
        assert sink.duplicates == 100
    finally:
        sink.close()
    ids = stream_ids(nats_server.url)
    assert len(ids) == 250 == len(set(ids))


def test_an_existing_stream_with_a_shorter_duplicate_window_is_said(
    nats_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    short = StreamLog(nats_server.url, {"duplicate_window_s": 30.0})
    short.connect()
    short.close()
    caplog.set_level(logging.WARNING, "failsoft.store.stream")
    sink = StreamLog(nats_server.url, {"duplicate_window_s": 900.0})
    try:
        sink.connect()
    finally:
        sink.close()
    said = [json.loads(r.getMessage()) for r in caplog.records if "stream_settings" in r.getMessage()]
    assert said and "duplicate window is 30 s" in said[0]["problems"][0]


def test_a_broker_outage_spills_and_replays_and_every_record_lands_once(
    tmp_path: Path, nats_server: Any
) -> None:
    spill = SpillFile.claim(tmp_path / "spill", 1 << 30)
    log = PredictionLog(StreamLog(nats_server.url, {}), spill, flush_s=0.05)
    log.start()
    sent = batches(3000, per=100, shadow_every=10)
    done: list[str] = []
    try:
        for payload in sent[:10]:
            log.append_batch(payload, 1, done.append)
        assert log.flush(20)
        nats_server.stop()
        for payload in sent[10:20]:
            log.append_batch(payload, 1, done.append)
        assert log.flush(30)
        assert "spilled" in done and spill.size > 0, "the broker was away: the batches waited on disk"
        nats_server.start()
        for payload in sent[20:]:
            log.append_batch(payload, 1, done.append)
        end = time.monotonic() + 60
        while (spill.size or log.buffered) and time.monotonic() < end:
            log.flush(1)
    finally:
        log.stop()
    assert spill.size == 0 and log.replayed > 0
    want = {e.data.record_id for p in sent for e in events(p)}
    ids = stream_ids(nats_server.url)
    assert len(ids) == len(want) == len(set(ids)) and set(ids) == want
    lake = run_land(nats_server.url, tmp_path / "lake", "FAILSOFT_PREDICTIONS", SUBJECT, until_idle_s=1.5)
    assert lake.landed == len(want)
    reader = LakeLog(tmp_path / "lake")
    assert reader.count_predictions() == 3000 and reader.count_predictions(shadow=True) == 300


def test_a_lander_dying_mid_flush_loses_nothing_and_lands_nothing_twice(
    tmp_path: Path, nats_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = StreamLog(nats_server.url, {})
    try:
        for k in range(3):  # three models: a flush writes three files
            sink.insert_json(*batches(400, per=100, model_name=f"m{k}"))
    finally:
        sink.close()
    import pyarrow.parquet as pq

    real, written = pq.write_table, []

    def dies_on_the_second_file(*args: Any, **kwargs: Any) -> None:
        if len(written) == 1:
            raise KeyboardInterrupt("killed")  # between two files of one flush, before the checkpoint
        real(*args, **kwargs)
        written.append(1)

    monkeypatch.setattr(pq, "write_table", dies_on_the_second_file)
    with pytest.raises(KeyboardInterrupt):
        run_land(nats_server.url, tmp_path / "lake", "FAILSOFT_PREDICTIONS", SUBJECT, until_idle_s=1.0)
    assert len(list((tmp_path / "lake").glob("predictions/*/*/*.parquet"))) == 1
    monkeypatch.setattr(pq, "write_table", real)
    again = run_land(nats_server.url, tmp_path / "lake", "FAILSOFT_PREDICTIONS", SUBJECT, until_idle_s=1.0)
    assert again.landed == 1200
    rows = LakeLog(tmp_path / "lake").execute("SELECT count(*), count(DISTINCT record_id) FROM predictions")
    assert rows == [(1200, 1200)]
    # acknowledged or not, a third run finds nothing new, and a lake whose checkpoint says so skips redelivery
    third = run_land(nats_server.url, tmp_path / "lake", "FAILSOFT_PREDICTIONS", SUBJECT, until_idle_s=1.0)
    assert third.landed == 0
    fresh = Lake(tmp_path / "lake", "failsoft-lander")
    fresh.recover()
    assert fresh.landed_seq >= 12


def _serve(tmp_path: Path, nats_url: str, name: str, journal: bool = True) -> tuple[list[str], Path]:
    toml = tmp_path / f"{name}.toml"
    store = {"log": nats_url, "lake": str(tmp_path / "lake"), "journal": journal, "flush_ms": 1000}
    m = model(python_tier("py", "tests.helpers:score"), default_tier(0.5), deadline_ms=200)
    write(toml, {"m": m}, data_dir=str(tmp_path / "state"), store=store)
    return [sys.executable, "-m", "failsoft.cli", "serve", str(toml), "--log-level", "warning"], toml


def _ask(port: int, ids: range) -> set[str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    answered = set()
    for i in ids:
        conn.request("POST", "/v1/models/m/predict", json.dumps({"id": f"k{i}", "inputs": {"x": 0.5}}),
                     {"content-type": "application/json"})  # fmt: skip
        response = conn.getresponse()
        response.read()
        if response.status == 200:
            answered.add(f"k{i}")
    conn.close()
    return answered


def test_a_gateway_killed_with_kill_9_puts_every_answer_in_the_stream_once(
    tmp_path: Path, nats_server: Any
) -> None:
    args, toml = _serve(tmp_path, nats_server.url, "p")
    gw = Proc(args, "/v2/health/ready", tmp_path / "gw.log").start()
    answered = _ask(gw.port, range(400))
    gw.kill()  # a second's answers only in the journal
    again = Proc(args, "/v2/health/ready", tmp_path / "gw.log", port=gw.port).start()
    answered |= _ask(again.port, range(400, 500))
    again.stop()
    assert len(answered) == 500
    requests = [e["data"]["request_id"] for e in stream_events(nats_server.url)]
    assert sorted(requests) == sorted(answered), "ids answered = ids in the stream, each once"
    landed = subprocess.run(
        [sys.executable, "-m", "failsoft.cli", "log", "land", "--portfolio", str(toml), "--until-idle", "1",
         "--flush-s", "0.5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert landed.returncode == 0, landed.stderr
    assert "500 rows landed" in landed.stdout
    out = tmp_path / "x.jsonl"
    exported = subprocess.run(
        [sys.executable, "-m", "failsoft.cli", "export", "predictions", "--portfolio", str(toml),
         "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert {json.loads(line)["request_id"] for line in out.read_text().splitlines()} == answered


def test_shadow_judging_export_drift_and_estimate_read_the_lake_as_the_database(
    tmp_path: Path, nats_server: Any
) -> None:
    from failsoft.config import DriftSpec
    from failsoft.monitor.offline import drift_file, estimate_file, profile_file
    from failsoft.store.export import export_predictions
    from failsoft.store.labels import Labels
    from failsoft.store.shadow import ShadowRecords

    sent = batches(2000, per=100, shadow_every=1)
    db = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    db.connect()
    db.insert_json(*sent)
    Labels(db).save([(f"r{i}", json.dumps([round(i / 2000)]), 1.0, 2.0) for i in range(0, 2000, 3)])
    sink = StreamLog(nats_server.url, {})
    try:
        sink.insert_json(*sent)
    finally:
        sink.close()
    run_land(nats_server.url, tmp_path / "lake", "FAILSOFT_PREDICTIONS", SUBJECT, until_idle_s=1.0)
    lake = LakeLog(tmp_path / "lake", db)
    from_db = ShadowRecords(db).evidence("m", "cand", "cpu")
    from_lake = ShadowRecords(db, lake).evidence("m", "cand", "cpu")
    assert from_db.logged == 2000 and len(from_db.labelled) == 667
    assert msgspec.to_builtins(from_lake) == msgspec.to_builtins(from_db)
    files = {}
    for name, source in (("db", db), ("lake", lake)):
        files[name] = tmp_path / f"{name}.parquet"
        export_predictions(source, files[name], progress=False)
    import pyarrow.parquet as pq

    assert pq.read_table(files["db"]).equals(pq.read_table(files["lake"]))
    profile = profile_file(files["db"], ["input_x"], "output", None, None, 0.5, None)
    spec = DriftSpec()
    reports = [drift_file(profile, files[k], 500, spec, "output") for k in ("db", "lake")]
    for r in reports:
        r.pop("seconds", None)
    assert reports[0] == reports[1]
    # estimated performance of the logged scores, against a labelled reference: the same from either
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    scores = rng.random(2000)
    reference = tmp_path / "reference.parquet"
    pq.write_table(pa.table({"output": scores, "y": (rng.random(2000) < scores).astype(float)}), reference)
    estimates = [estimate_file(reference, files[k], "output", "y", chunk_size=500) for k in ("db", "lake")]
    assert estimates[0] == estimates[1] and len(estimates[0]["chunks"]) == 8  # live and shadow rows
    db.close()
