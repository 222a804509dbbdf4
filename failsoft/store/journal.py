"""The crash journal: each answer's log record written to a local file before the answer is sent.

Without it, a serving process killed outright (kill -9, the OOM killer) loses the records it still held in
memory: those of the last flush window. With ``[store] journal = true`` each record is also appended to a
journal segment (one ``write`` call, no fsync: the page cache outlives the process, though not the
machine) on the request path. Segments are deleted once every record in them is safe (in the database
or the spill file); a process that starts takes over the segments no live process holds, turns them
into spill batches and deletes them, and its writer replays them. Record ids travel in the journal, so a
record that also reached the database before the crash is kept once.

File format: a first line ``{"prefix": P}`` (the record ids' prefix), then one line per record,
``[n, ...record]``: the record whose id is ``P-n``, and a line ``{"b": [B, N]}`` each time a batch is taken
(records B to B+N-1): recovered records come back in the batches they were sent in, so a stream that
names its messages by batch (store/stream.py) recognises one it already holds.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger("failsoft.store.journal")
_decode = msgspec.json.Decoder().decode
# A segment is sealed (and a new one begun) past this size, or once all it holds is safe and it is old.
SEGMENT_BYTES = 4 << 20
SEGMENT_S = 5.0


class Journal:
    """This process's journal segments under ``folder`` (not thread-safe: the event loop's alone)."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder = folder
        self.prefix = prefix
        folder.mkdir(parents=True, exist_ok=True)
        self._n = 0
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._first = 0  # the first record number the open segment may hold
        self._last = 0  # the last record number written to it
        self._opened = 0.0
        self._sealed: collections.deque[tuple[Path, int]] = collections.deque()  # (path, last number)
        self.failures = 0
        self._open()

    def _open(self) -> None:
        self._n += 1
        path = self.folder / f"{self.prefix}-{self._n}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while this process lives: no other process takes it over
        header = json.dumps({"prefix": self.prefix}).encode() + b"\n"
        os.write(fd, header)
        self._fd, self._path, self._size, self._opened = fd, path, len(header), time.monotonic()
        self._first = self._last + 1

    def write(self, line: bytes) -> None:
        """Append one record's line (``[n, ...]`` encoded, with its newline), record number ``n`` being one
        more than the last. Never raises: a failure is counted, and the record still goes the usual way."""
        try:
            self._size += os.write(self._fd, line)
            self._last += 1
        except OSError as err:
            self.failures += 1
            self._last += 1
            if self.failures in {1, 100} or self.failures % 10_000 == 0:
                log.warning(json.dumps({"event": "journal_write_failed", "error": str(err),
                                        "failures": self.failures}))  # fmt: skip

    def mark(self, base: int, n: int) -> None:
        """Records ``base`` to ``base + n - 1`` were taken as one batch (a line that numbers no record)."""
        try:
            self._size += os.write(self._fd, b'{"b":[%d,%d]}\n' % (base, n))
        except OSError:
            self.failures += 1

    def release(self, safe_below: int) -> None:
        """Every record numbered below ``safe_below`` is in the database or the spill: drop the segments
        that hold only such records, and begin a new segment when the open one is big, or old and safe."""
        current_safe = self._last < safe_below
        if self._size >= SEGMENT_BYTES or (current_safe and time.monotonic() - self._opened >= SEGMENT_S):
            assert self._path is not None
            os.close(self._fd)
            self._sealed.append((self._path, self._last))
            self._open()
        while self._sealed and self._sealed[0][1] < safe_below:
            path, _ = self._sealed.popleft()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def close(self, all_safe: bool) -> None:
        """Close the open segment; with ``all_safe`` (everything reached the database or the spill), delete
        every segment of this process."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if all_safe:
            assert self._path is not None
            for path in [*(p for p, _ in self._sealed), self._path]:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            self._sealed.clear()


def orphans(folder: Path) -> Iterator[tuple[list[Path], list[bytes]]]:
    """The segments no live process holds (their writer died), a process's segments together, as encoded
    batch documents: the batches it had taken as they were taken, the rest one per run of consecutive
    record numbers. The caller deletes the files once their batches are safe. Lines torn by the crash are
    skipped and logged."""
    if not folder.is_dir():
        return
    found: dict[str, tuple[list[Path], list[bytes]]] = {}
    for path in sorted(folder.glob("*.jsonl"), key=_segment_order):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                continue  # a live process holds it
            with os.fdopen(os.dup(fd), "rb") as fh:
                lines = fh.read().splitlines()
        finally:
            os.close(fd)
        paths, content = found.setdefault(path.name.rsplit("-", 1)[0], ([], []))
        paths.append(path)
        content.extend(lines)
    for paths, lines in found.values():
        yield paths, _batches(paths[0], lines)


def _segment_order(path: Path) -> tuple[str, int]:
    stem, _, n = path.stem.rpartition("-")
    return stem, int(n) if n.isdigit() else 0


def _batches(path: Path, lines: list[bytes]) -> list[bytes]:
    prefix = None
    records: dict[int, Any] = {}
    taken: list[tuple[int, int]] = []
    torn = 0
    for line in lines:
        try:
            item = _decode(line)
            if isinstance(item, dict):
                if "prefix" in item:
                    prefix = item["prefix"]
                else:
                    taken.append((int(item["b"][0]), int(item["b"][1])))
                continue
            n, *record = item
            records[int(n)] = record
        except (msgspec.DecodeError, ValueError, TypeError, KeyError, IndexError):
            torn += 1
    if torn:
        log.warning(json.dumps({"event": "journal_torn_lines", "file": str(path), "lines": torn}))
    if prefix is None:
        if lines:
            log.warning(json.dumps({"event": "journal_unreadable", "file": str(path)}))
        return []
    out: list[bytes] = []
    for base, count in taken:
        present = {n: records.pop(n) for n in range(base, base + count) if n in records}
        if len(present) == count:
            out.append(msgspec.json.encode({"prefix": prefix, "base": base, "rows": list(present.values())}))
        else:  # torn inside: what is left, in runs
            out.extend(_runs(prefix, present))
    out.extend(_runs(prefix, records))
    return out


def _runs(prefix: str, records: dict[int, Any]) -> list[bytes]:
    runs: list[dict[str, Any]] = []
    for n in sorted(records):
        if runs and runs[-1]["base"] + len(runs[-1]["rows"]) == n:
            runs[-1]["rows"].append(records[n])
        else:
            runs.append({"prefix": prefix, "base": n, "rows": [records[n]]})
    return [msgspec.json.encode(run) for run in runs]
