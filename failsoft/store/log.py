"""The prediction log: answers recorded off the hot path, in batches, and never lost to an outage.

This is the engine of the writer process (store/writer.py): it receives encoded batches (made by a
RecordQueue in the serving process) and a thread writes them, grouped, one transaction at a time. When the
database is unreachable or errors, batches go to the spill file (fsynced, bounded) and the writer retries
with backoff; once the database answers, the spill is replayed before new batches, and every write skips
record ids already stored, so each record lands exactly once.

An outage and a poisoned record are told apart: a batch the database refuses for what it holds
(StoreRejected: a value it cannot store) is split in halves until the records at fault are found; those
go to the dead-letter file beside the spill (one JSON line each, with the database's words), the rest is
written, and the log goes on. A spill that holds such a record is replayed the same way.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import msgspec

from failsoft.store.base import LogSink, StoreRejected, StoreUnavailable
from failsoft.store.spill import SpillFile, SpillFull

log = logging.getLogger("failsoft.store.log")
# Seconds between looks for spill files left by writers that are gone.
ORPHAN_LOOK_S = 10.0


class PredictionLog:
    def __init__(
        self,
        store: LogSink,
        spill: SpillFile,
        *,
        batch_size: int = 1000,
        flush_s: float = 0.2,
        retention_s: float | None = None,
    ) -> None:
        self.store = store
        self.spill = spill
        self.batch_size = batch_size
        self.flush_s = flush_s
        self.retention_s = retention_s
        # Batches already encoded elsewhere (the serving process), each with a callback once it is safe.
        self._batches: collections.deque[tuple[bytes, int, Callable[[str], None]]] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_id = 1
        self.store_up = False
        self.written = self.spilled = self.replayed = self.dropped = self.failures = 0
        self.dead_lettered = 0
        self.dead_letter_path = spill.path.parent / "dead-letter.jsonl"
        # appended like the spill (fsynced a line at a time), never replayed
        self.dead_letters = SpillFile(self.dead_letter_path, 1 << 40)
        self._retry_at = 0.0
        self._backoff = 0.1
        self._next_retention = 0.0
        self._next_orphan_look = 0.0
        self._last_warning = 0.0
        self._busy = False
        self._spill_only = False

    def append_batch(self, payload: bytes, n: int, done: Callable[[str], None]) -> None:
        """Queue an encoded batch of ``n`` records; ``done`` runs once it is in the database or the spill,
        with where it went: "written", "spilled" or "dropped" (the spill file full or failing)."""
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
        while self._batches:
            self._cycle(final=True)

    def _cycle(self, final: bool = False) -> None:
        """One flush: replay the spill once the database is back, then write what is queued."""
        self._busy = True
        try:
            self._maybe_retention()
            if self.spill.size and (self.store_up or time.monotonic() >= self._retry_at):
                self._attempt(self._replay)
            if self.store_up and time.monotonic() >= self._next_orphan_look:
                self._next_orphan_look = time.monotonic() + ORPHAN_LOOK_S
                self._attempt(self._adopt_orphans)
            while self._batches:
                # Small batches from the serving process are written together, one transaction a group.
                group, rows = [], 0
                while self._batches and rows < self.batch_size:
                    group.append(self._batches.popleft())
                    rows += group[-1][1]
                if self._write(final, *(p for p, _, _ in group)):
                    for _, _, done in group:
                        done("written")
                else:
                    for payload, n, done in group:
                        done(self._spill(payload, n))
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

    def _write(self, final: bool, *payloads: bytes) -> bool:
        if self._spill_only:
            return False
        if not self.store_up and time.monotonic() < self._retry_at and not final:
            return False

        def write() -> None:
            if self.spill.size:
                self._replay()
            self.written += self._insert(*payloads)

        return self._attempt(write)

    def _replay(self, spill: SpillFile | None = None) -> None:
        spill = spill or self.spill
        for payload in spill.batches():
            self.replayed += self._insert(payload)
        spill.clear()
        done = {"event": "spill_replayed", "file": str(spill.path), "records": self.replayed}
        log.warning(json.dumps({**done, "torn_lines": spill.torn_lines}))

    def _adopt_orphans(self) -> None:
        """Replay the spill files no live process holds: a writer that died (or stopped while another had
        taken the first free file) would otherwise leave them until some later start claimed that file."""
        for orphan in SpillFile.orphans(self.spill.path.parent, self.spill.max_bytes):
            try:
                if orphan.path != self.spill.path:
                    self._replay(orphan)
            finally:
                orphan.release()

    def _insert(self, *payloads: bytes) -> int:
        """Insert the batches; records the database refuses for their content go to the dead-letter file and
        the rest are written. Raises StoreUnavailable on an outage."""
        try:
            return self.store.insert_json(*payloads)
        except StoreRejected:
            pass
        return sum(self._bisect(msgspec.json.decode(p)) for p in payloads)

    def _bisect(self, doc: dict[str, Any]) -> int:
        rows = doc["rows"]
        try:
            return self.store.insert_json(msgspec.json.encode(doc))
        except StoreRejected as err:
            if len(rows) == 1:
                self._dead_letter(doc, err)
                return 0
        half = len(rows) // 2
        base = int(doc["base"])
        left = {"prefix": doc["prefix"], "base": base, "rows": rows[:half]}
        right = {"prefix": doc["prefix"], "base": base + half, "rows": rows[half:]}
        return self._bisect(left) + self._bisect(right)

    def _dead_letter(self, doc: dict[str, Any], err: StoreRejected) -> None:
        """One refused record, kept on disk with why (fsynced) instead of blocking every later write."""
        record_id = doc["rows"][0][0] or f"{doc['prefix']}-{doc['base']}"
        line = msgspec.json.encode({"record": record_id, "error": str(err)[:500], "batch": doc})
        try:
            self.dead_letters.append(line)
        except (SpillFull, OSError) as io_err:
            log.warning(json.dumps({"event": "dead_letter_write_failed", "error": str(io_err)}))
        self.dead_lettered += 1
        log.warning(
            json.dumps(
                {
                    "event": "log_record_dead_lettered",
                    "record": record_id,
                    "error": str(err)[:300],
                    "file": str(self.dead_letter_path),
                    "dead_lettered": self.dead_lettered,
                }
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

    def _spill(self, payload: bytes, n: int) -> str:
        try:
            self.spill.append(payload)
            self.spilled += n
            return "spilled"
        except (SpillFull, OSError) as err:
            self.dropped += n
            now = time.monotonic()
            if now - self._last_warning > 60:
                self._last_warning = now
                log.warning(
                    json.dumps({"event": "log_records_dropped", "error": str(err), "dropped": self.dropped})
                )
            return "dropped"

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
        return sum(n for _, n, _ in list(self._batches))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything queued so far has been written or spilled (for tests and shutdown)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self._wake.set()
            time.sleep(0.01)
            if not self._batches and not self._busy:
                time.sleep(0.01)
                if not self._batches and not self._busy:
                    return True
        return False

    def snapshot(self) -> dict[str, Any]:
        return {
            "store": self.store.dialect,
            "store_up": self.store_up,
            "buffered": self.buffered,
            "written": self.written,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "dead_lettered": self.dead_lettered,
            "spill_bytes": self.spill.size,
        }
