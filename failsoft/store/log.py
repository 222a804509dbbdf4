"""The prediction log: answers recorded off the hot path, in batches, and never lost to an outage.

The request path only appends a tuple to a bounded deque (no I/O, no lock, no encoding). A writer thread
drains it every ``flush_s`` seconds or ``batch_size`` records, encodes the batch and writes it in one
transaction. When the database is unreachable or errors, batches go to the spill file (fsynced) and the
writer retries with backoff; once the database answers, the spill is replayed before new batches, and
every write skips record ids already stored, so each record lands exactly once. A full deque drops new
records (counted, warned): serving never waits on the log.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from failsoft.store.base import Store, StoreUnavailable
from failsoft.store.spill import SpillFile, SpillFull

log = logging.getLogger("failsoft.store.log")


def _fallback(obj: Any) -> Any:
    """Outputs of user models may hold numpy values or other objects: keep what they say."""
    tolist = getattr(obj, "tolist", None)
    return tolist() if callable(tolist) else str(obj)


_encode = msgspec.json.Encoder(enc_hook=_fallback).encode


class PredictionLog:
    def __init__(
        self,
        store: Store,
        spill: SpillFile,
        *,
        batch_size: int = 1000,
        flush_s: float = 0.2,
        max_buffer: int = 200_000,
        retention_s: float | None = None,
        log_inputs: bool = False,
    ) -> None:
        self.store = store
        self.spill = spill
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self.retention_s = retention_s
        self.log_inputs = log_inputs
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        # Batches already encoded elsewhere (the serving process), each with a callback once it is safe.
        self._batches: collections.deque[tuple[bytes, int, Callable[[], None]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._prefix = os.urandom(6).hex()
        self._next_id = 1
        self.store_up = False
        self.written = self.spilled = self.replayed = self.dropped = self.failures = 0
        self._retry_at = 0.0
        self._backoff = 0.1
        self._next_retention = 0.0
        self._last_warning = 0.0
        self._busy = False
        self._spill_only = False

    # ---- the hot path -----------------------------------------------------------------------------------

    def append(
        self,
        request_id: str,
        model: str,
        version: str,
        tier: str,
        role: str,
        degraded: bool,
        reason: str | None,
        outputs: Any,
        inputs: Any,
        latency_ms: float,
    ) -> None:
        """Queue one answer. O(1), never blocks, never raises."""
        queue = self._queue
        if len(queue) >= self.max_buffer:
            self.dropped += 1
            return
        queue.append(
            (
                None,  # the record id: given at the database, from the batch's prefix and position
                request_id,
                model,
                version,
                tier,
                role,
                degraded,
                reason,
                outputs,
                inputs if self.log_inputs else None,
                latency_ms,
                time.time(),
            )
        )
        if len(queue) == self.batch_size:
            self._wake.set()

    def append_batch(self, payload: bytes, n: int, done: Callable[[], None]) -> None:
        """Queue an encoded batch of ``n`` records; ``done`` runs once it is in the database or the spill."""
        self._batches.append((payload, n, done))
        self._wake.set()

    # ---- the writer thread ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="failsoft-log-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write out everything queued (to the database, else the spill file), then stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # the database is too slow to take the rest: keep it on disk
                self._spill_only = True
                self._thread.join(timeout_s)
            self._thread = None
        self.spill.release()
        self.store.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self._cycle()
        while self._queue or self._batches:
            self._cycle(final=True)

    def _take(self) -> tuple[bytes, int]:
        """Up to batch_size queued records as one JSON array (one C call: cheap under the GIL)."""
        queue = self._queue
        popleft = queue.popleft
        batch = [popleft() for _ in range(min(len(queue), self.batch_size))]
        base, self._next_id = self._next_id, self._next_id + len(batch)
        return _encode({"prefix": self._prefix, "base": base, "rows": batch}), len(batch)

    def _cycle(self, final: bool = False) -> None:
        """One flush: replay the spill once the database is back, then write what is queued."""
        self._busy = True
        try:
            self._maybe_retention()
            if self.spill.size and (self.store_up or time.monotonic() >= self._retry_at):
                self._attempt(self._replay)
            while self._batches:
                payload, n, done = self._batches.popleft()
                if not self._write(payload, final):
                    self._spill(payload, n)
                done()
            while self._queue:
                payload, n = self._take()
                if not self._write(payload, final):
                    self._spill(payload, n)
        finally:
            self._busy = False

    def _attempt(self, fn: Callable[[], None]) -> bool:
        try:
            fn()
        except StoreUnavailable as err:
            self._down(err)
            return False
        except Exception as err:  # the writer must survive anything; the caller keeps what it holds
            log.exception("prediction log write failed")
            self._down(err)
            return False
        if not self.store_up:
            log.warning(json.dumps({"event": "store_up", "store": self.store.dialect}))
        self.store_up, self._backoff = True, 0.1
        return True

    def _write(self, payload: bytes, final: bool) -> bool:
        if self._spill_only:
            return False
        if not self.store_up and time.monotonic() < self._retry_at and not final:
            return False

        def write() -> None:
            if self.spill.size:
                self._replay()
            self.written += self.store.insert_json(payload)

        return self._attempt(write)

    def _replay(self) -> None:
        for payload in self.spill.batches():
            self.replayed += self.store.insert_json(payload)
        self.spill.clear()
        log.warning(
            json.dumps(
                {"event": "spill_replayed", "records": self.replayed, "torn_lines": self.spill.torn_lines}
            )
        )

    def _down(self, err: Exception) -> None:
        self.failures += 1
        if self.store_up or self.failures == 1:
            log.warning(
                json.dumps({"event": "store_down", "error": str(err)[:300], "spill": str(self.spill.path)})
            )
        self.store_up = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)

    def _spill(self, payload: bytes, n: int) -> None:
        try:
            self.spill.append(payload)
            self.spilled += n
        except (SpillFull, OSError) as err:
            self.dropped += n
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning(
                    json.dumps({"event": "log_records_dropped", "error": str(err), "dropped": self.dropped})
                )

    def _maybe_retention(self) -> None:
        if self.retention_s is None or not self.store_up or time.monotonic() < self._next_retention:
            return
        self._next_retention = time.monotonic() + 3600
        try:
            n = self.store.delete_predictions_before(time.time() - self.retention_s)
        except StoreUnavailable as err:
            self._down(err)
            return
        if n:
            log.info(json.dumps({"event": "retention", "deleted": n}))

    # ---- observation ------------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._queue)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far has been written or spilled (for tests and shutdown)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._wake.set()
            time.sleep(0.01)
            if not self._queue and not self._batches and not self._busy:
                time.sleep(0.01)
                if not self._queue and not self._batches and not self._busy:
                    return True
        return False

    def metrics(self) -> Iterator[Metric]:
        c = CounterMetricFamily(
            "failsoft_log_records", "Prediction log records, by outcome", labels=["outcome"]
        )
        for name in ("written", "spilled", "replayed", "dropped"):
            c.add_metric([name], getattr(self, name))
        yield c
        g = GaugeMetricFamily("failsoft_log_buffered", "Log records waiting in memory")
        g.add_metric([], self.buffered)
        yield g
        s = GaugeMetricFamily("failsoft_log_spill_bytes", "Size of the spill file (records waiting on disk)")
        s.add_metric([], self.spill.size)
        yield s
        u = GaugeMetricFamily("failsoft_store_up", "1 when the last write to the database succeeded")
        u.add_metric([], 1.0 if self.store_up else 0.0)
        yield u

    def snapshot(self) -> dict[str, Any]:
        return {
            "store": self.store.dialect,
            "store_up": self.store_up,
            "buffered": self.buffered,
            "written": self.written,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "spill_bytes": self.spill.size,
        }
