"""The event-loop lag watcher: a loop held by a synchronous call is seen, measured and reported."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from failsoft.lag import LoopLag
from failsoft.metrics import Metrics


async def test_a_held_loop_is_measured_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    lag = LoopLag(interval_s=0.005, stall_s=0.02)
    metrics = Metrics()
    metrics.gauges.append(lag.metrics)
    caplog.set_level(logging.WARNING, logger="failsoft.lag")
    lag.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.08)  # a synchronous call holding the loop
        await asyncio.sleep(0.03)
    finally:
        await lag.close()
    assert lag.worst_s >= 0.07
    assert lag.stalls >= 1
    lines = [json.loads(r.getMessage()) for r in caplog.records if "loop_stalled" in r.getMessage()]
    assert lines and lines[0]["lag_ms"] >= 70 and "MainThread" in lines[0]["threads"]
    text = generate_latest(metrics.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    worst = families["failsoft_event_loop_lag_max_seconds"].samples[0].value
    assert worst == pytest.approx(lag.worst_s)
    buckets = {s.labels["le"]: s.value for s in families["failsoft_event_loop_lag_seconds"].samples
               if s.name.endswith("_bucket")}  # fmt: skip
    assert buckets["0.05"] < buckets["+Inf"]  # the stall sits above 50 ms
