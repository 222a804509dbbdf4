"""The health service: a keep-out is state in the store, not a timer in one process. Two real replicas
share a real PostgreSQL; both are replaced during the keep-out (one killed, one stopped), and the new
ones honour it and end it on time, once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from failsoft.demo.procs import Proc
from tests.audit.test_audits import ALICE, get, health_of_model, start, traffic
from tests.store.test_outage import post

KEEP_OUT_S = 10.0


def replica(tmp: Path, name: str, pg_url: str) -> Proc:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    return start(folder, "", store={"url": pg_url, "poll_ms": 200})


async def test_a_keep_out_survives_replicas_being_replaced_and_ends_on_time_once(
    tmp_path: Path, pg_url: str
) -> None:
    a, b = replica(tmp_path, "a", pg_url), replica(tmp_path, "b", pg_url)
    procs = [a, b]
    try:
        await traffic(a.url, 2.5)  # the remote tier is down: a fallback episode, then an audit item
        items = get(a.url + "/v1/audits?status=open&model=bad")["audits"]
        assert items, "an audit item for the model in fallback"
        status, done = post(
            f"{a.url}/v1/audits/{items[0]['id']}/resolve", {"action": "keep_out", "for_s": KEEP_OUT_S}, ALICE
        )
        assert status == 200, done
        until = done["action"]["details"]["until"]
        for proc in (a, b):
            deadline = time.monotonic() + 5
            while health_of_model(proc.url, "bad") != "quarantined" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert health_of_model(proc.url, "bad") == "quarantined", proc.url

        a.kill()  # no goodbye: its memory is gone
        b.stop()
        a2, b2 = replica(tmp_path, "a2", pg_url), replica(tmp_path, "b2", pg_url)
        procs += [a2, b2]
        assert time.time() < until, "the new replicas started inside the keep-out"
        for proc in (a2, b2):
            assert health_of_model(proc.url, "bad") == "quarantined", "a new replica honours the keep-out"
            out = post(proc.url + "/v1/models/bad/predict", {"inputs": {}})[1]
            assert out["reason"] == "quarantined"

        deadline = time.monotonic() + (until - time.time()) + 20  # generous: a loaded machine
        while time.monotonic() < deadline and any(health_of_model(p.url, "bad") != "live" for p in (a2, b2)):
            await asyncio.sleep(0.2)
        assert all(health_of_model(p.url, "bad") == "live" for p in (a2, b2)), "back after the keep-out"

        ended = [
            e for e in get(a2.url + "/v1/audits/log?model=bad")["log"] if e["action"] == "keep_out_ended"
        ]
        assert len(ended) == 1, "ended once, by one of the replicas"
        events = get(a2.url + "/v1/models/bad/events")["events"]
        back = next(e for e in events if e["kind"] == "health" and e["value"] == "live")
        # The store's own record of when it ended: not before the end, and within a few polls of it (the
        # poll wakes at the end itself; the bound leaves room for a loaded machine).
        assert until <= back["ts"] <= until + 5.0, (back["ts"] - until, back)
        assert back["reason"] == "keep-out period over"
    finally:
        for proc in procs:
            proc.stop()
