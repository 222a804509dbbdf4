"""The prediction log as the serving process sees it: an O(1) append on the request path, a batch
encoded now and then on the event loop, and a writer process (store/writer.py) that does the rest.

Every batch stays in memory until the writer acknowledges it (in the database, or fsynced to the spill
file). If the writer dies, a new one is started and the unacknowledged batches are sent again; record ids
travel inside the batch, so the database keeps each record once. Memory is bounded by ``max_buffer``
records; beyond it new records are dropped and counted, and serving never waits.

A serving process starts a writer of its own, or (``socket``: the workers of ``failsoft serve --workers
N``) connects to the one writer its supervisor runs for all of them, on a Unix socket the supervisor
holds. Then the supervisor restarts a writer that dies, and the serving process connects again and sends
what the old one had not acknowledged.
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
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from failsoft.store.frames import HEADER
from failsoft.store.journal import Journal, orphans
from failsoft.store.records import RecordQueue
from failsoft.store.spill import SpillFile
from failsoft.tasks import stop, wait_set

if TYPE_CHECKING:
    from failsoft.config import StoreSpec

log = logging.getLogger("failsoft.store.log_client")
SEND_SIZE = 128
# Seconds a start waits for its writer before serving without one.
LINK_WAIT_S = 30.0


class _Out(Protocol):  # a writer's stdin, or the shared writer's socket
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def close(self) -> None: ...
    async def drain(self) -> None: ...


def writer_argv(
    url: str, spill_dir: Path, options: dict[str, Any], listen_fd: int | None = None
) -> list[str]:
    """The log writer's command line: one serving process's own writer, or (``listen_fd``, a listening
    Unix socket) the writer every worker of a supervisor connects to."""
    argv = [sys.executable, "-m", "failsoft.store.writer", url, str(spill_dir), json.dumps(options)]
    return argv if listen_fd is None else [*argv, "--listen-fd", str(listen_fd)]


def log_options(store: StoreSpec) -> dict[str, Any]:
    """The writer's settings from ``[store]`` (a supervisor's shared writer takes the same)."""
    return {
        "batch_size": store.batch_size,
        "flush_s": store.flush_ms / 1000,
        "retention_s": store.retention_days * 86400 or None,
        "spill_max_bytes": store.spill_max_mb << 20,
        "stream": msgspec.structs.asdict(store.stream),
    }


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
        socket: str | None = None,
        stream: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.spill_dir = spill_dir
        self.journal_dir = journal_dir
        self.flush_s = flush_s
        self.socket = socket
        options = {
            "batch_size": batch_size,
            "flush_s": flush_s,
            "retention_s": retention_s,
            "spill_max_bytes": spill_max_bytes,
            "stream": stream or {},
        }
        self._argv = writer_argv(url, spill_dir, options)
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
        self._out: _Out | None = None  # None while there is no writer to send to
        self._linked = asyncio.Event()  # set while there is
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
        self._tasks.append(asyncio.create_task(self._link(), name="failsoft-log-writer-link"))
        self._tasks.append(asyncio.create_task(self._flusher(), name="failsoft-log-flusher"))
        # (a shared writer that cannot be reached does not stop the start: records wait, bounded, for it)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINK_WAIT_S):
                await self._linked.wait()

    def _recover(self, folder: Path) -> None:
        """The journals of processes that died: their records into the spill file (fsynced), which the
        writer replays; the database keeps each record once, however many of them it already had."""
        for paths, batches in orphans(folder):
            if batches:
                SpillFile.keep(self.spill_dir, batches)
            for path in paths:
                path.unlink()
            done = {"event": "journal_recovered", "files": [str(p) for p in paths], "batches": len(batches)}
            log.warning(json.dumps(done))

    async def stop(self, timeout_s: float = 15.0) -> None:
        """Send what is queued, let the writer finish, and keep on disk whatever it could not take."""
        self._stopping = True
        self._send_queued()
        out, proc = self._out, self._proc
        if out is not None:
            with contextlib.suppress(ConnectionError):
                await out.drain()
        if self.socket is not None:  # the shared writer goes on: wait for its acknowledgements
            end = time.monotonic() + timeout_s
            while self._unacked and self._out is not None and time.monotonic() < end:
                await asyncio.sleep(0.01)
            if self._out is not None:
                self._out.close()
        elif proc is not None and out is not None:  # our own writer: it writes out everything, then ends
            out.close()
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
        out = self._out
        if out is None or out.is_closing():
            return  # re-sent when the writer is back
        out.write(HEADER.pack(seq, n, len(payload)) + payload)

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

    async def _open(self) -> asyncio.StreamReader:
        """A writer to send to: a new process of our own, or a connection to the shared one."""
        if self.socket is not None:
            reader, writer = await asyncio.open_unix_connection(self.socket)
            self._out = writer
            return reader
        proc = await asyncio.create_subprocess_exec(
            *self._argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        assert proc.stdin is not None and proc.stdout is not None
        self._proc, self._out = proc, proc.stdin
        return proc.stdout

    async def _link(self) -> None:
        """Keeps a writer to send to: opens one, sends it every batch not yet acknowledged (in order), reads
        its acknowledgements; when it dies (or the shared one's connection ends), opens another."""
        while not self._stopping:
            try:
                acks = await self._open()
            except OSError as err:  # the shared writer's socket is gone (its supervisor died)
                self._failed("log_writer_unreachable", error=str(err), socket=self.socket)
                await asyncio.sleep(min(0.1 * self.restarts, 2.0))
                continue
            for seq in sorted(self._unacked):
                payload, n, _ = self._unacked[seq]
                self._write(seq, payload, n)
            self._linked.set()
            await self._read_acks(acks)
            self._linked.clear()
            self._out = None
            code = await self._proc.wait() if self._proc is not None else None
            if self._stopping:
                return
            self._failed("log_writer_restarted", exit_code=code, socket=self.socket)
            await asyncio.sleep(min(0.1 * self.restarts, 2.0))

    async def _read_acks(self, acks: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while line := await acks.readline():
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                self.writer = doc
                seq = doc.get("ack")
                if seq is not None and seq in self._unacked:
                    self._unacked_records -= self._unacked.pop(seq)[1]
                    self.records.held_elsewhere = self._unacked_records

    def _failed(self, event: str, **fields: Any) -> None:
        self.restarts += 1
        fields = {k: v for k, v in fields.items() if v is not None}
        log.warning(json.dumps({"event": event, **fields, "unacked_batches": len(self._unacked)}))

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
