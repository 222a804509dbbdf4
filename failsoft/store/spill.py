"""The spill file: where log records wait, durable, while the database is away.

Append-only, one line per batch (the batch's JSON array), flushed and fsynced a batch at a time, bounded
in size. Replayed oldest first once the database is back; the store skips record ids it already holds, so
a replay cut short by a crash and run again writes nothing twice. A torn last line (a crash mid-append)
is skipped and counted.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode


class SpillFull(Exception):
    """The spill file would exceed its bound; the records were not written."""


class SpillFile:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.torn_lines = 0
        self._lock_fh: Any = None

    @classmethod
    def claim(cls, folder: Path, max_bytes: int, stem: str = "predictions") -> SpillFile:
        """The first spill file in ``folder`` no other live process holds (an flock on a side file).

        Replicas sharing a data folder each get their own file; a file left by a process that died is
        claimed, and so replayed, by the next one to start.
        """
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            spill = cls._locked(folder / f"{stem}-{n}.jsonl", max_bytes)
            if spill is not None:
                return spill
        raise OSError(f"no free spill file in {folder}")

    @classmethod
    def orphans(cls, folder: Path, max_bytes: int, stem: str = "predictions") -> Iterator[SpillFile]:
        """The non-empty spill files in ``folder`` no live process holds (their writer died, or stopped
        while another had taken the first free file), each claimed while the caller replays it; the caller
        releases each."""
        for path in sorted(folder.glob(f"{stem}-*.jsonl")):
            if path.stat().st_size == 0:
                continue
            spill = cls._locked(path, max_bytes)
            if spill is not None:
                yield spill

    @classmethod
    def _locked(cls, path: Path, max_bytes: int) -> SpillFile | None:
        """The spill file at ``path`` with its side lock taken, or None when a live process holds it."""
        lock = path.with_suffix(".lock").open("a")
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            return None
        spill = cls(path, max_bytes)
        spill._lock_fh = lock
        return spill

    @classmethod
    def keep(cls, folder: Path, payloads: Iterable[bytes]) -> None:
        """Batches written (fsynced) to a spill file of their own claim in ``folder``, for a writer to
        replay: what a serving process holds when it cannot hand it to its writer."""
        spill = cls.claim(folder, 1 << 40)
        try:
            for payload in payloads:
                spill.append(payload)
        finally:
            spill.release()

    def release(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def append(self, payload: bytes) -> None:
        data = payload + b"\n"
        if self.size + len(data) > self.max_bytes:
            raise SpillFull(f"{self.path} would grow past {self.max_bytes} bytes")
        with self.path.open("ab") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def batches(self) -> Iterator[bytes]:
        """The spilled batches (JSON arrays), oldest first; torn lines are skipped and counted."""
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for line in fh:
                try:
                    _decode(line)
                except msgspec.DecodeError:
                    self.torn_lines += 1
                    continue
                yield line.rstrip(b"\n")

    def clear(self) -> None:
        """Empty the file once every row in it is safely in the database."""
        with self.path.open("wb") as fh:
            fh.flush()
            os.fsync(fh.fileno())
