"""How late the event loop runs: the one number that says whether deadlines can be kept at all.

A task sleeps ``interval_s`` over and over and measures how much later than asked it woke up. Anything
that holds the loop (a long synchronous call, a garbage collection, a thread holding the interpreter lock,
the process waiting for a core) shows up here first. Each lag goes to a histogram
(``failsoft_event_loop_lag_seconds``); a stall longer than ``stall_s`` also gets one log line with what
else was running then (threads, collections so far), at most one a second.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from failsoft.metrics import Histogram
from failsoft.tasks import stop

log = logging.getLogger("failsoft.lag")

LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class LoopLag:
    def __init__(self, interval_s: float = 0.025, stall_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.stall_s = stall_s
        self.hist = Histogram(LAG_BUCKETS)
        self.worst_s = 0.0
        self.stalls = 0
        self._logged_at = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._watch(), name="failsoft-loop-lag")

    async def close(self) -> None:
        task, self._task = self._task, None
        await stop(task)

    async def _watch(self) -> None:
        clock, interval = time.perf_counter, self.interval_s
        while True:
            asked = clock()
            await asyncio.sleep(interval)
            lag = max(0.0, clock() - asked - interval)
            self.hist.observe(lag)
            if lag > self.worst_s:
                self.worst_s = lag
            if lag >= self.stall_s:
                self.stalls += 1
                self._report(lag)

    def _report(self, lag: float) -> None:
        now = time.monotonic()
        if now - self._logged_at < 1.0:
            return
        self._logged_at = now
        log.warning(
            json.dumps(
                {
                    "event": "loop_stalled",
                    "lag_ms": round(lag * 1000.0, 1),
                    "stalls": self.stalls,
                    "threads": sorted(t.name for t in threading.enumerate()),
                    "gc_collections": [s["collections"] for s in gc.get_stats()],
                }
            )
        )

    def metrics(self) -> Iterator[Metric]:
        hist = HistogramMetricFamily(
            "failsoft_event_loop_lag_seconds", "How much later than asked the event loop woke up"
        )
        hist.add_metric([], self.hist.cumulative(), self.hist.total)
        worst = GaugeMetricFamily("failsoft_event_loop_lag_max_seconds", "The longest event-loop lag seen")
        worst.add_metric([], self.worst_s)
        return iter([hist, worst])

    def snapshot(self) -> dict[str, float | int]:
        return {"max_ms": round(self.worst_s * 1000.0, 2), "stalls": self.stalls}
