"""The lake: the prediction log landed from the stream as Parquet, by model and hour, for DuckDB.

``failsoft log land`` reads the stream with a durable consumer and writes what it read, every ``flush_s``
seconds (or ``max_rows`` rows), as files::

    LAKE/predictions/model=M/hour=2026-12-07T21/F-L.parquet    the live answers (the log's columns)
    LAKE/shadow_calls/model=M/hour=.../F-L.parquet             shadow candidates' calls (a row per call)
    LAKE/_lander/DURABLE.json                                  the last stream sequence landed

F and L are the first and last stream sequence of the flush that wrote the file. A flush writes its files
(each fsynced, then renamed into place), then moves the checkpoint (fsynced, renamed), and only then
acknowledges its messages to the stream. A lander killed at any point therefore starts again from the
checkpoint: files of a flush the checkpoint does not cover are deleted, and messages the stream delivers
again at or below it are acknowledged and skipped. Nothing is lost and no row is landed twice; a record
the stream holds twice (replayed after an outage longer than its duplicate window) is landed once too,
by its record id within a run of the lander.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import msgspec

from failsoft.durable import fsync_dir, write_atomic
from failsoft.store.base import PREDICTION_COLUMNS, SHADOW_CALL_COLUMNS
from failsoft.store.records import _NULL
from failsoft.store.stream import BATCH_TYPE, Event

log = logging.getLogger("failsoft.store.lake")
# record ids remembered across flushes (duplicates the stream itself holds are dropped against them)
SEEN_IDS = 2_000_000
_one = msgspec.json.Decoder(Event).decode
_many = msgspec.json.Decoder(list[Event]).decode


def _schema(table: str) -> Any:
    import pyarrow as pa

    s, f, b = pa.string(), pa.float64(), pa.bool_()
    if table == "predictions":
        types = [s, s, s, s, s, s, b, s, s, s, f, f]
        return pa.schema(list(zip(PREDICTION_COLUMNS, types, strict=True)))
    return pa.schema(list(zip(SHADOW_CALL_COLUMNS, [s, s, s, s, s, s, s, f, f], strict=True)))


def partition(model: str) -> str:
    return "model=" + urllib.parse.quote(model, safe="")


def hour(ts: float) -> str:
    return "hour=" + time.strftime("%Y-%m-%dT%H", time.gmtime(ts))


class Lake:
    """The lake's folder as the lander writes it: pending rows, flushes and the checkpoint."""

    def __init__(self, root: Path, durable: str) -> None:
        self.root = root
        self.checkpoint = root / "_lander" / f"{durable}.json"
        self.landed_seq = 0
        self.rows: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
        self.pending = 0
        self.first_seq: int | None = None
        self.last_seq = 0
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.landed = self.skipped = self.duplicates = self.files = 0

    def recover(self) -> None:
        """Read the checkpoint; delete the files of a flush it does not cover (the lander died mid-flush)."""
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if self.checkpoint.exists():
            self.landed_seq = int(json.loads(self.checkpoint.read_text())["last_seq"])
        removed = 0
        for table in ("predictions", "shadow_calls"):
            for path in (self.root / table).glob("*/*/*.parquet*"):
                first = path.name.split("-", 1)[0]
                if path.name.endswith(".tmp") or (first.isdigit() and int(first) > self.landed_seq):
                    path.unlink()
                    removed += 1
        if removed:
            log.warning(json.dumps({"event": "lake_uncommitted_removed", "files": removed,
                                    "landed_seq": self.landed_seq}))  # fmt: skip

    def add(self, seq: int, data: bytes, batch: bool) -> None:
        """One message from the stream (its stream sequence): its events as rows waiting for the flush."""
        if seq <= self.landed_seq:
            self.skipped += 1
            return
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq
        for e in _many(data) if batch else [_one(data)]:
            d = e.data
            rid = str(d.record_id)  # (always set in an event)
            if rid in self.seen:
                self.duplicates += 1
                continue
            self.seen[rid] = None
            if len(self.seen) > SEEN_IDS:
                self.seen.popitem(last=False)
            outputs = bytes(d.outputs).decode()
            if e.type == "io.failsoft.shadow":
                key = ("shadow_calls", d.model, hour(d.ts))
                row: tuple[Any, ...] = (d.record_id, d.model, d.version, d.tier, d.reason,
                                        json.dumps(d.request_id), outputs, d.latency_ms, d.ts)  # fmt: skip
            else:
                key = ("predictions", d.model, hour(d.ts))
                inputs = None if d.inputs in (None, _NULL) else bytes(d.inputs).decode()
                row = (d.record_id, d.request_id, d.model, d.version, d.tier, d.role, d.degraded, d.reason,
                       outputs, inputs, d.latency_ms, d.ts)  # fmt: skip
            self.rows.setdefault(key, []).append(row)
            self.pending += 1

    def flush(self) -> None:
        """Write every pending row (a file per table, model and hour, each fsynced and renamed into place),
        then the checkpoint: every message read so far may then be acknowledged."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.first_seq is None:
            return
        name = f"{self.first_seq}-{self.last_seq}.parquet"
        folders = set()
        for (table, model, hr), rows in self.rows.items():
            folder = self.root / table / partition(model) / hr
            schema = _schema(table)
            columns = list(zip(*rows, strict=True))
            data = pa.table([pa.array(c, type=t) for c, t in zip(columns, schema.types, strict=True)],
                            schema=schema)  # fmt: skip
            buffer = pa.BufferOutputStream()
            pq.write_table(data, buffer, compression="zstd")
            write_atomic(folder / name, buffer.getvalue().to_pybytes())
            folders.add(folder)
            self.files += 1
        for folder in folders:
            fsync_dir(folder)
        write_atomic(self.checkpoint, json.dumps({"last_seq": self.last_seq, "at": time.time()}).encode())
        fsync_dir(self.checkpoint.parent)
        self.landed += self.pending
        self.landed_seq = self.last_seq
        self.rows, self.pending, self.first_seq = {}, 0, None


async def land(
    url: str,
    root: Path,
    stream: str,
    subject: str,
    durable: str = "failsoft-lander",
    flush_s: float = 10.0,
    max_rows: int = 200_000,
    until_idle_s: float | None = None,
    progress: Any = None,
) -> Lake:
    """Land the stream until cancelled (or, with ``until_idle_s``, once nothing came for that long)."""
    import nats
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
    from nats.js.errors import NotFoundError

    lake = Lake(root, durable)
    lake.recover()
    nc = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    try:
        js = nc.jetstream()
        # The checkpoint, not the consumer's acknowledgements, says where landing resumes: the consumer is
        # made again from it at every start, so what a killed lander had read and not landed comes at once
        # (not after its acknowledgement wait). One lander a durable name at a time.
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, durable)
        start = DeliverPolicy.BY_START_SEQUENCE
        cfg = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.ALL, deliver_policy=start,
                             opt_start_seq=lake.landed_seq + 1, ack_wait=max(60.0, flush_s * 6),
                             max_ack_pending=-1)  # fmt: skip
        sub = await js.pull_subscribe(f"{subject}.>", durable=durable, stream=stream, config=cfg)
        started = last_flush = idle_since = time.monotonic()
        last_msg: Any = None
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=1.0)
            except (NatsTimeout, TimeoutError):  # nothing came within the second
                msgs = []
            except Exception as err:  # the broker is away: the client reconnects; what is read waits
                said = {"event": "lake_fetch_failed", "error": f"{type(err).__name__}: {err}"}
                log.warning(json.dumps(said))
                await asyncio.sleep(0.5)
                msgs = []
            now = time.monotonic()
            for msg in msgs:
                batch = (msg.headers or {}).get("Content-Type", BATCH_TYPE) == BATCH_TYPE
                lake.add(msg.metadata.sequence.stream, msg.data, batch)
                last_msg = msg
            if msgs:
                idle_since = now
            if last_msg is not None and (lake.pending >= max_rows or now - last_flush >= flush_s or not msgs):
                lake.flush()  # (nothing to write when each was landed before: acknowledged all the same)
                with contextlib.suppress(Exception):  # (a lost ack: the checkpoint already says it)
                    await last_msg.ack()  # every message up to it (AckPolicy.ALL)
                last_msg, last_flush = None, now
                if progress is not None:
                    progress(lake)
            if until_idle_s is not None and now - idle_since >= until_idle_s and last_msg is None:
                log.info(json.dumps({"event": "lake_idle", "landed": lake.landed,
                                     "seconds": round(now - started, 1)}))  # fmt: skip
                return lake
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def run_land(*args: Any, **kwargs: Any) -> Lake:
    return asyncio.run(land(*args, **kwargs))
