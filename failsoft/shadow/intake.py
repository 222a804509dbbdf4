"""A model's shadow intake: the copies of live requests waiting for its pump (shadow/mirror.py), and the
pile the pump takes from it at once.

When every tier that may become a candidate reads only matrices (Python models), the intake keeps just the
numbers the live tier already read, packed as bytes, and the pump's pile is one matrix; otherwise it keeps
the requests' batches. It is bounded by requests and by rows; a copy that finds it full is dropped and
counted for each candidate.
"""

from __future__ import annotations

import asyncio
import random
import struct
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from failsoft.chain import Answer, Tier
from failsoft.validation import Batch, Matrix

# A candidate's share of a request: its id and its rows (the validated batch, or only the numbers when
# every tier that may become a candidate reads nothing else).
Copy = tuple[str, Batch | Matrix]
# The most numbers an intake holds, in bytes
BUFFER_BYTES = 64 << 20


class Counted(Protocol):
    """A candidate's lane as the intake sees it: where its dropped copies are counted."""

    dropped: int


class Pile:
    """Requests taken from an intake at once: ids, rows per request, and the rows themselves (one matrix
    for all, or each request's batch)."""

    __slots__ = ("batches", "ids", "matrix", "offsets", "sizes")

    def __init__(self, ids: list[str], sizes: list[int], matrix: Matrix | None, batches: list[Batch]) -> None:
        self.ids = ids
        self.sizes = sizes
        self.matrix = matrix
        self.batches = batches
        # where each request's rows start in the matrix (None: a row per request)
        self.offsets = None if matrix is None or len(matrix) == len(ids) else np.cumsum([0, *sizes])

    def __len__(self) -> int:
        return len(self.ids)

    def _rows(self, a: int, b: int) -> slice:
        return slice(a, b) if self.offsets is None else slice(int(self.offsets[a]), int(self.offsets[b]))

    def batch(self, names: tuple[str, ...], a: int, b: int) -> Batch:
        """Requests a..b as one batch."""
        if self.matrix is None:
            return Batch.join(names, self.batches[a:b])
        return Batch.of_matrix(names, self.matrix[self._rows(a, b)])

    def copies(self) -> list[Copy]:
        """A copy per request, for a candidate's own queue."""
        if self.matrix is None:
            return list(zip(self.ids, self.batches, strict=True))
        matrix = self.matrix
        return [(rid, matrix[self._rows(i, i + 1)]) for i, rid in enumerate(self.ids)]

    def sample(self, share: float) -> Pile:
        """Each request kept with probability ``share``."""
        if share >= 1.0:
            return self
        keep = [i for i in range(len(self.ids)) if random.random() < share]
        ids, sizes = [self.ids[i] for i in keep], [self.sizes[i] for i in keep]
        if self.matrix is None:
            return Pile(ids, sizes, None, [self.batches[i] for i in keep])
        if self.offsets is None:
            return Pile(ids, sizes, self.matrix[keep], [])
        parts = [self.matrix[self._rows(i, i + 1)] for i in keep]
        return Pile(ids, sizes, np.concatenate(parts) if parts else self.matrix[:0], [])


class Intake:
    """One model's copies waiting for its pump; ``listen`` is the model's listener. When every tier that
    may become one of its candidates reads only matrices, a request's numbers are packed into bytes (a
    row of float64s) and nothing of the request itself is kept: holding a few hundred requests' objects
    until the pump ran cost the live path more (its memory went cold in the CPU caches) than the
    candidates' arithmetic. The pump joins the packed rows into one matrix."""

    __slots__ = (
        "batches", "candidates", "extra", "ids", "lanes", "limit", "max_rows", "pack", "packed", "room",
        "several", "wake", "width",
    )  # fmt: skip

    def __init__(self, width: int, limit: int, matrix_only: bool, lanes: Mapping[str, Counted]) -> None:
        self.width = max(1, width)
        # packed rows (matrix_only), else the requests' batches
        self.packed: list[bytes] | None = [] if matrix_only else None
        # a row's numbers as bytes: struct reads a tuple of floats in a third of what numpy takes
        self.pack = struct.Struct(f"{self.width}d").pack
        self.max_rows = BUFFER_BYTES // (8 * self.width)
        self.limit = limit  # the most requests waiting
        # One bound for the usual request (one row): requests plus the rows beyond one that some brought,
        # under both limits. Near either, the other way counts each exactly.
        self.room = min(limit, self.max_rows)
        self.extra = 0  # rows packed beyond one a request
        self.lanes = lanes  # the model's lanes by tier name, to count the copies dropped
        self.ids: list[str] = []
        self.several: dict[int, int] = {}  # position -> rows, for the requests of other than one row
        self.batches: list[Batch] = []
        self.wake = asyncio.Event()
        # the model's candidates as of the latest copy (a promotion changes them)
        self.candidates: tuple[Tier, ...] = ()

    def listen(self, answer: Answer) -> None:
        """Keep a copy of the request for the candidates, or count it dropped for each when full. O(1),
        never blocks. The usual request (a row of numbers, room left) takes the shortest way: this runs
        for every request, and each step of Python costs about as much as the copy of its numbers."""
        candidates = answer.candidates
        if not candidates:
            return
        batch = answer.batch
        if batch is None:
            return
        self.candidates = candidates
        ids = self.ids
        values = batch.values
        packed = self.packed
        fits = len(ids) + self.extra < self.room
        if packed is not None and values is not None and len(values) == 1 and fits:
            try:
                packed.append(self.pack(*values[0]))
            except (struct.error, TypeError, OverflowError):  # a number no float holds: numpy's way says so
                self._other(answer, batch)
                return
            ids.append(answer.outcome.id)
            if len(ids) == 1:
                self.wake.set()
            return
        self._other(answer, batch)

    def _other(self, answer: Answer, batch: Batch) -> None:
        """Any other request: several rows, numbers not read yet, candidates that read more than numbers,
        or an intake near full."""
        ids = self.ids
        n = self._copy(batch) if len(ids) < self.limit else None
        if n is None:
            for tier in answer.candidates:
                lane = self.lanes.get(tier.name)
                if lane is not None:
                    lane.dropped += 1
            return
        if n != 1:
            self.several[len(ids)] = n
        ids.append(answer.outcome.id)
        if len(ids) == 1:
            self.wake.set()

    def _copy(self, batch: Batch) -> int | None:
        """Keep a batch the usual way cannot: the rows kept, or None when there is no room or its values
        are no numbers."""
        n = len(batch)
        if self.packed is None:
            self.batches.append(batch)
            return n
        if len(self.ids) + self.extra + n > self.max_rows:
            return None
        try:
            matrix = np.asarray(batch.matrix(), dtype=np.float64)  # tobytes() copies in C order
        except (ValueError, TypeError, OverflowError):  # InvalidValue is a ValueError
            return None
        if matrix.shape != (n, self.width):
            return None
        self.packed.append(matrix.tobytes())
        self.extra += n - 1
        return n

    def take(self) -> Pile:
        """Everything waiting; the intake is empty after."""
        matrix = None
        if self.packed is not None:
            # a bytearray, so the matrix is writable as a copy would be (a model may change its input)
            rows = np.frombuffer(bytearray().join(self.packed), dtype=np.float64)
            matrix = rows.reshape(-1, self.width)
            self.packed = []
        sizes = [1] * len(self.ids)
        for at, n in self.several.items():
            sizes[at] = n
        pile = Pile(self.ids, sizes, matrix, self.batches)
        self.ids, self.several, self.batches, self.extra = [], {}, [], 0
        return pile
