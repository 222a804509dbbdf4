"""The log writer process: takes encoded batches on stdin, writes them (or spills them), acks on stdout.

The serving process only queues records and encodes a batch now and then; everything that waits on the
database, and all its Python work, happens here, in a process of its own, so it never competes with the
request path for the interpreter lock.

Frames on stdin: a 16-byte header (sequence number u64, record count u32, length u32, little-endian) and
the batch document. Lines on stdout: one JSON object per acknowledged batch, with the writer's counters.

    python -m failsoft.store.writer STORE_URL SPILL_DIR OPTIONS_JSON
"""

from __future__ import annotations

import functools
import json
import sys
import threading
from pathlib import Path

from failsoft.store import open_store
from failsoft.store.frames import HEADER
from failsoft.store.log import PredictionLog
from failsoft.store.spill import SpillFile


def main() -> None:
    url, spill_dir, raw = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    spill = SpillFile.claim(spill_dir, raw["spill_max_bytes"])
    log = PredictionLog(
        open_store(url),
        spill,
        batch_size=raw["batch_size"],
        flush_s=raw["flush_s"],
        retention_s=raw["retention_s"],
    )
    out = sys.stdout.buffer
    lock = threading.Lock()
    parent_gone = threading.Event()

    def report(seq: int | None) -> None:
        line = json.dumps({"ack": seq, **log.snapshot()}).encode() + b"\n"
        with lock:
            if parent_gone.is_set():
                return
            try:
                out.write(line)
                out.flush()
            except OSError:  # the serving process died (kill -9): nobody to tell, but write out what came
                parent_gone.set()

    def heartbeat() -> None:
        while not stopping.wait(1.0):
            report(None)

    stopping = threading.Event()
    log.start()
    threading.Thread(target=heartbeat, daemon=True).start()
    stdin = sys.stdin.buffer
    while True:
        header = stdin.read(HEADER.size)
        if len(header) < HEADER.size:
            break  # the serving process closed the pipe (or died): write out what is here, then stop
        seq, n, length = HEADER.unpack(header)
        payload = stdin.read(length)
        if len(payload) < length:
            break
        log.append_batch(payload, n, functools.partial(report, seq))
    stopping.set()
    log.stop()
    report(None)


if __name__ == "__main__":
    main()
