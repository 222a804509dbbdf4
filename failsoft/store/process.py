"""The prediction log as the serving process sees it: an O(1) append on the request path, a batch
encoded now and then on the event loop, and a writer process (store/writer.py) that does the rest.

Every batch stays in memory until the writer acknowledges it (in the database, or fsynced to the spill
file). If the writer dies, a new one is started and the unacknowledged batches are sent again; record ids
travel inside the batch, so the database keeps each record once. Memory is bounded by ``max_buffer``
records; beyond it new records are dropped and counted, and serving never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from failsoft.store.frames import HEADER
from failsoft.store.journal import Journal, orphans
from failsoft.store.records import RecordQueue
from failsoft.store.spill import SpillFile
from failsoft.tasks import stop, wait_set

log = logging.getLogger("failsoft.store.process")
SEND_SIZE = 128


class ProcessLog:
    def __init__(
        self,
        url: str,
        spill_dir: Path,
        *,
        batch_size: int = 1000,
        flush_s: float = 0.2,
        max_buffer: int = 200_000,
        retention_s: float | None = None,
        log_inputs: bool = False,
        spill_max_bytes: int = 1 << 30,
        journal_dir: Path | None = None,
    ) -> None:
        self.url = url
        self.spill_dir = spill_dir
        self.journal_dir = journal_dir
        self.flush_s = flush_s
        self._options = json.dumps(
            {
                "batch_size": batch_size,
                "flush_s": flush_s,
                "retention_s": retention_s,
                "spill_max_bytes": spill_max_bytes,
            }
        )
        self._kick = asyncio.Event()
        # Sent in small batches, so encoding one never holds the event loop for long (~0.1 ms); the
        # writer groups them into transactions of batch_size records.
        self.records = RecordQueue(max_buffer, log_inputs, self._kick.set, SEND_SIZE)
        self.append = self.records.append  # the request path
        # sent to the writer, not yet acknowledged: sequence -> (batch, records, number of its first record)
        self._unacked: dict[int, tuple[bytes, int, int]] = {}
        self._unacked_records = 0
        self._seq = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.restarts = 0
        self.flusher_errors = 0
        self.writer: dict[str, Any] = {}

    # ---- life cycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.journal_dir is not None:
            await asyncio.to_thread(self._recover, self.journal_dir)
            self.records.journal = Journal(self.journal_dir, self.records.prefix)
        await self._spawn()
        self._tasks.append(asyncio.create_task(self._flusher(), name="failsoft-log-flusher"))

    def _recover(self, folder: Path) -> None:
        """The journals of processes that died: their records into the spill file (fsynced), which the
        writer replays; the database keeps each record once, however many of them it already had."""
        for path, batches in orphans(folder):
            if batches:
                SpillFile.keep(self.spill_dir, batches)
            path.unlink()
            done = {"event": "journal_recovered", "file": str(path), "batches": len(batches)}
            log.warning(json.dumps(done))

    async def _spawn(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "failsoft.store.writer",
            self.url,
            str(self.spill_dir),
            self._options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._tasks.append(asyncio.create_task(self._reader(self._proc), name="failsoft-log-acks"))

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Send what is queued, let the writer finish, and keep on disk whatever it could not take."""
        self._stopping = True
        self._send_queued()
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(ConnectionError):
                await proc.stdin.drain()
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout_s)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for task in self._tasks:
            await stop(task)
        self._tasks.clear()
        if self._unacked:  # the writer died or hung at the very end: its batches wait in a spill file
            SpillFile.keep(self.spill_dir, (self._unacked[seq][0] for seq in sorted(self._unacked)))
            log.warning(json.dumps({"event": "log_batches_spilled_at_exit", "batches": len(self._unacked)}))
        if self.records.journal is not None:  # every record is in the database or the spill now
            self.records.journal.close(all_safe=not self.records)
            self.records.journal = None

    # ---- batching and the writer's answers ------------------------------------------------------------

    def _send_queued(self) -> None:
        while self.records:
            first = self.records.next_taken
            payload, n = self.records.take()
            self._seq += 1
            self._unacked[self._seq] = (payload, n, first)
            self._unacked_records += n
            self.records.held_elsewhere = self._unacked_records
            self._write(self._seq, payload, n)

    def _write(self, seq: int, payload: bytes, n: int) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.returncode is not None or proc.stdin.is_closing():
            return  # re-sent when the writer is back
        proc.stdin.write(HEADER.pack(seq, n, len(payload)) + payload)

    async def _flusher(self) -> None:
        """Sends batches to the writer; supervised: whatever goes wrong in one turn is logged and counted,
        and the next turn runs (a flusher that died would leave every later answer unlogged)."""
        while True:
            try:
                await wait_set(self._kick, self.flush_s)
                self._kick.clear()
                self._send_queued()
                if self.records.journal is not None:
                    self.records.journal.release(self._safe_below())
            except asyncio.CancelledError:
                raise
            except Exception:
                self.flusher_errors += 1
                log.exception("prediction log flusher failed (error %d); it goes on", self.flusher_errors)
                await asyncio.sleep(self.flush_s)

    def _safe_below(self) -> int:
        """Every record numbered below this is acknowledged (in the database or the spill file)."""
        if self._unacked:
            return min(first for _, _, first in self._unacked.values())
        return self.records.next_taken

    async def _reader(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            self.writer = doc
            seq = doc.get("ack")
            if seq is not None and seq in self._unacked:
                self._unacked_records -= self._unacked.pop(seq)[1]
                self.records.held_elsewhere = self._unacked_records
        await proc.wait()
        if self._stopping:
            return
        # The writer died: start another and send it every batch not yet acknowledged, in order.
        self.restarts += 1
        log.warning(
            json.dumps(
                {
                    "event": "log_writer_restarted",
                    "exit_code": proc.returncode,
                    "unacked_batches": len(self._unacked),
                }
            )
        )
        await asyncio.sleep(min(0.1 * self.restarts, 2.0))
        await self._spawn()
        for seq in sorted(self._unacked):
            payload, n, _ = self._unacked[seq]
            self._write(seq, payload, n)

    # ---- observation ------------------------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self.records) + self._unacked_records

    @property
    def store_up(self) -> bool:
        return bool(self.writer.get("store_up"))

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Until everything appended so far is acknowledged by the writer."""
        end = time.monotonic() + timeout_s
        self._send_queued()
        while self.buffered and time.monotonic() < end:
            self._send_queued()
            await asyncio.sleep(0.01)
        return not self.buffered

    def snapshot(self) -> dict[str, Any]:
        w = self.writer
        return {
            "store": w.get("store"),
            "store_up": self.store_up,
            "buffered": self.buffered,
            "written": w.get("written", 0),
            "spilled": w.get("spilled", 0),
            "replayed": w.get("replayed", 0),
            "dropped": self.records.dropped + w.get("dropped", 0),
            "dead_lettered": w.get("dead_lettered", 0),
            "normalised_batches": self.records.normalised,
            "flusher_errors": self.flusher_errors,
            "spill_bytes": w.get("spill_bytes", 0),
            "writer_restarts": self.restarts,
        }

    def metrics(self) -> Iterator[Metric]:
        snap = self.snapshot()
        c = CounterMetricFamily(
            "failsoft_log_records", "Prediction log records, by outcome", labels=["outcome"]
        )
        for name in ("written", "spilled", "replayed", "dropped", "dead_lettered"):
            c.add_metric([name], snap[name])
        yield c
        g = GaugeMetricFamily(
            "failsoft_log_buffered", "Log records in memory, not yet safe in the store or spill"
        )
        g.add_metric([], snap["buffered"])
        yield g
        s = GaugeMetricFamily("failsoft_log_spill_bytes", "Size of the spill file (records waiting on disk)")
        s.add_metric([], snap["spill_bytes"])
        yield s
        u = GaugeMetricFamily("failsoft_store_up", "1 when the last write to the database succeeded")
        u.add_metric([], 1.0 if snap["store_up"] else 0.0)
        yield u
        r = CounterMetricFamily("failsoft_log_writer_restarts", "Times the log writer process was restarted")
        r.add_metric([], snap["writer_restarts"])
        yield r
        f = CounterMetricFamily(
            "failsoft_log_flusher_errors", "Turns of the log flusher that failed (logged; it went on)"
        )
        f.add_metric([], snap["flusher_errors"])
        yield f
