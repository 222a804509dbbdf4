"""The log writer process: takes encoded batches, writes them (or spills them), acknowledges each.

The serving process only queues records and encodes a batch now and then; everything that waits on the
database, and all its Python work, happens here, in a process of its own, so it never competes with the
request path for the interpreter lock.

Frames in: a 16-byte header (sequence number u64, record count u32, length u32, little-endian) and the
batch document. Lines out: one JSON object per acknowledged batch, with the writer's counters (and one a
second without an ``ack``).

    python -m failsoft.store.writer STORE_URL SPILL_DIR OPTIONS_JSON [--listen-fd FD]

Alone, it serves one serving process: frames on stdin, lines on stdout. With ``--listen-fd`` (the workers
of ``failsoft serve --workers N``) it serves every worker: FD is a listening Unix socket its supervisor
holds, each worker connects and sends frames and gets its own lines on its connection, and stdin is the
supervisor's line to it (its end: write out what is here, then stop).

It ignores SIGTERM and SIGINT: those reach the whole process group (Ctrl-C, a shell's ``kill %1``, a
container's stop), and its stopping is its serving process's to decide: the end of its line comes once the
last batch is sent, and a serving process that is killed outright closes that line too.
"""

from __future__ import annotations

import functools
import json
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import BinaryIO

from failsoft.store import open_log
from failsoft.store.frames import HEADER
from failsoft.store.log import PredictionLog
from failsoft.store.spill import SpillFile

OWN = ("written", "spilled", "dropped")


class Peer:
    """A serving process the writer acknowledges to. ``own_counts`` (a shared writer): the records it
    reports written, spilled and dropped are this serving process's own, so every worker's metrics add
    up; the rest (replayed, dead-lettered, the spill's size) are the writer's."""

    def __init__(self, log: PredictionLog, out: BinaryIO, own_counts: bool = False) -> None:
        self.log = log
        self.out = out
        self.lock = threading.Lock()
        self.gone = False
        self.counts: dict[str, int] | None = dict.fromkeys(OWN, 0) if own_counts else None

    def done(self, seq: int, n: int, outcome: str) -> None:
        if self.counts is not None:
            self.counts[outcome] += n
        self.report(seq)

    def report(self, seq: int | None) -> None:
        doc = {"ack": seq, **self.log.snapshot(), **(self.counts or {})}
        line = json.dumps(doc).encode() + b"\n"
        with self.lock:
            if self.gone:
                return
            try:
                self.out.write(line)
                self.out.flush()
            except (OSError, ValueError):  # it died (kill -9): nobody to tell, but write out what it sent
                self.gone = True

    def take(self, frames: BinaryIO) -> None:
        """Queue every batch that comes on ``frames`` until it ends."""
        while True:
            header = frames.read(HEADER.size)
            if len(header) < HEADER.size:
                return  # the serving process closed its end (or died)
            seq, n, length = HEADER.unpack(header)
            payload = frames.read(length)
            if len(payload) < length:
                return
            self.log.append_batch(payload, n, functools.partial(self.done, seq, n))


def serve_workers(log: PredictionLog, listener: socket.socket, peers: set[Peer]) -> None:
    """Accept each worker's connection and take its batches, in a thread of its own."""

    def one(conn: socket.socket) -> None:
        peer = Peer(log, conn.makefile("wb"), own_counts=True)
        peers.add(peer)
        try:
            peer.take(conn.makefile("rb"))
        finally:
            peers.discard(peer)
            conn.close()

    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # closed at the stop
        threading.Thread(target=one, args=(conn,), name="failsoft-log-peer", daemon=True).start()


def main() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    url, spill_dir, raw = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    listen_fd = int(sys.argv[5]) if sys.argv[4:5] == ["--listen-fd"] else None
    spill = SpillFile.claim(spill_dir, raw["spill_max_bytes"])
    log = PredictionLog(
        open_log(url, {**raw.get("stream", {}), "retention_s": raw["retention_s"]}),
        spill,
        batch_size=raw["batch_size"],
        flush_s=raw["flush_s"],
        retention_s=raw["retention_s"],
    )
    stopping = threading.Event()
    peers: set[Peer] = set()

    def heartbeat() -> None:
        while not stopping.wait(1.0):
            for peer in list(peers):
                peer.report(None)

    log.start()
    threading.Thread(target=heartbeat, daemon=True).start()
    if listen_fd is None:
        peer = Peer(log, sys.stdout.buffer)
        peers.add(peer)
        peer.take(sys.stdin.buffer)
    else:
        listener = socket.socket(fileno=listen_fd)
        threading.Thread(target=serve_workers, args=(log, listener, peers), daemon=True).start()
        sys.stdin.buffer.read()  # until the supervisor closes it (or dies)
        listener.close()
    stopping.set()
    log.stop()
    for peer in list(peers):
        peer.report(None)


if __name__ == "__main__":
    main()
