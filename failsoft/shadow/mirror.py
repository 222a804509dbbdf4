"""Mirroring live traffic to shadow candidates, off the request path.

After a live answer is decided, the request is offered to its model's shadow intake: an O(1) append to one
bounded queue, whatever the number of candidates. A full intake drops the copy (counted for each
candidate); nothing ever waits. One pump per model lets copies pile up for a moment (``linger_s``), then
hands them to each candidate by its ``sample`` rate, in bulk:

- a candidate that answers on the event loop in microseconds (a compiled model) takes them there in
  slices that cost at most what one live request may (``INLINE_BUDGET_US``), the pump yielding to live
  requests between slices: a thread hop would cost more than the arithmetic. Candidates fed the same
  copies share each slice's stacked batch;
- any other candidate (a model in threads, a remote engine) gets them in its own bounded queue, drained by
  its dispatcher with up to ``workers`` calls in flight; while they are all busy the queue fills and then
  drops, so a candidate that hangs, fails or dies only drops its own copies.

Every call goes through the candidate's own breaker, bulkhead and timeout. When every tier that may become
a candidate reads only matrices (Python models), the intake keeps just the numbers the live tier already
read, packed as bytes, and a batch is a slice of the matrix they make; otherwise it keeps the requests'
batches and stacks them. Every shadow answer, or why there is none, goes to the prediction log with role
``shadow``: one record per call, kept by the store as one shadow call (store/base.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from failsoft.chain import Answer, Tier, guarded_call
from failsoft.schema import Batch, Matrix
from failsoft.store import StoreUnavailable
from failsoft.store.records import one_each
from failsoft.store.shadow import ShadowRecords
from failsoft.tasks import stop
from failsoft.tiers.python import INLINE_BUDGET_US

log = logging.getLogger("failsoft.shadow")

# A candidate's share of a request: its id and its rows (the validated batch, or only the numbers when
# every tier that may become a candidate reads nothing else).
Copy = tuple[str, Batch | Matrix]
# The most loop turns a candidate takes for one pile (see Mirror._pump)
SLICES = 4
# The most numbers an intake holds, in bytes
BUFFER_BYTES = 64 << 20
# Writes a shadow call to the prediction log: (request ids, model, version, tier, role, reason, answers,
# latency_ms), as ``RecordQueue.append_many`` takes it.
Write = Callable[[list[str], str, str, str, str, str | None, list[Any], float], None]


class Shadowed(NamedTuple):
    """What the mirror knows of a model: its names, its output check, and every tier that is or may
    become one of its candidates (its primary and its candidates: a promotion turns the old primary into
    one)."""

    model: str
    version: str
    names: tuple[str, ...]
    bad_output: Callable[[Any, int], str | None]
    eligible: tuple[Tier, ...]


class Lane:
    """One candidate's counters, and its queue when it runs off the loop."""

    __slots__ = ("dropped", "mirrored", "model", "queue", "row_us", "tier", "wake")

    def __init__(self, model: Shadowed, tier: Tier) -> None:
        self.model = model
        self.tier = tier
        self.queue: collections.deque[Copy] = collections.deque()
        self.wake = asyncio.Event()
        self.mirrored = 0  # copies handed to the candidate
        self.dropped = 0  # copies it never got: a queue was full
        # What a row costs the candidate on the loop, in microseconds (inline candidates): a moving
        # average of its shadow calls, starting from the one-row cost measured when it loaded.
        self.row_us = tier.backend.single_row_us


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

    def __init__(self, width: int, limit: int, matrix_only: bool, lanes: dict[str, Lane]) -> None:
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
        room = len(ids) + self.extra < self.room
        if packed is not None and values is not None and len(values) == 1 and room:
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
            matrix = np.ascontiguousarray(batch.matrix(), dtype=np.float64)
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


class Mirror:
    def __init__(
        self,
        models: Sequence[Shadowed],
        write: Write | None,
        records: ShadowRecords,
        replica: str,
        queue: int,
        max_batch: int,
        linger_s: float = 0.005,
        workers: int = 4,
    ) -> None:
        # only models with a candidate now or after any promotion: nothing to mirror for the others
        self.models = [m for m in models if len(m.eligible) > 1]
        self.write = write
        self.records = records
        self.replica = replica
        self.limit = queue
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.workers = workers
        # (model, tier name) -> its lane
        self.lanes: dict[tuple[str, str], Lane] = {}
        self.intakes: dict[str, Intake] = {}
        self.since = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """For each model, an intake and pump, and a lane for every tier that is or may become a candidate,
        with a dispatcher for those that run off the loop."""
        for model in self.models:
            pool = model.eligible
            lanes: dict[str, Lane] = {}
            intake = Intake(len(model.names), self.limit, all(t.backend.reads_matrix for t in pool), lanes)
            self.intakes[model.model] = intake
            name = f"failsoft-shadow-{model.model}"
            self._tasks.append(asyncio.create_task(self._pump(model, intake), name=name))
            for tier in pool:
                lane = Lane(model, tier)
                self.lanes[(model.model, tier.name)] = lanes[tier.name] = lane
                if not tier.backend.inline:
                    name = f"failsoft-shadow-{model.model}-{tier.name}"
                    self._tasks.append(asyncio.create_task(self._dispatch(lane), name=name))
        self._tasks.append(asyncio.create_task(self._persist_every(5.0), name="failsoft-shadow-counters"))

    async def close(self) -> None:
        self.intakes.clear()
        for task in [*self._tasks, *self._calls]:
            await stop(task)
        self._tasks.clear()
        await self.persist()

    async def _pump(self, model: Shadowed, intake: Intake) -> None:
        names = model.names
        while True:
            if not intake.ids:
                intake.wake.clear()
                await intake.wake.wait()
            # Let copies pile up for a moment: one call per batch, not one per request.
            await asyncio.sleep(self.linger_s)
            pile = intake.take()
            inline: list[tuple[Lane, Pile]] = []
            for tier in intake.candidates:
                lane = self.lanes.get((model.model, tier.name))
                if lane is None:
                    continue
                mine = pile.sample(tier.sample)
                if not len(mine):
                    continue
                if tier.backend.inline:
                    lane.mirrored += len(mine)
                    inline.append((lane, mine))
                    continue
                copies = mine.copies()
                room = max(0, self.limit - len(lane.queue))
                if len(copies) > room:
                    lane.dropped += len(copies) - room
                    copies = copies[:room]
                lane.mirrored += len(copies)
                lane.queue.extend(copies)
                lane.wake.set()
            if not inline:
                continue
            # Within the inline budget, but never so small that a candidate needs more than SLICES turns
            # of the loop for a pile: each turn brings about as many new requests as connections, and a
            # pump that took one small slice per turn would fall behind for good (and drop).
            budget = min(int(INLINE_BUDGET_US / lane.row_us) for lane, _ in inline)
            size = max(1, min(self.max_batch, max(budget, -(-len(pile) // SLICES))))
            shared: dict[int, Batch] = {}  # slices of the whole pile, stacked once for every candidate
            for lane, mine in inline:
                for at in range(0, len(mine), size):
                    end = min(at + size, len(mine))
                    batch = shared.get(at) if mine is pile else None
                    if batch is None:
                        batch = mine.batch(names, at, end)
                        if mine is pile:
                            shared[at] = batch
                    await self._send(lane, mine.ids[at:end], mine.sizes[at:end], batch)
                    # Live requests first. (Not a timed pause: under load a timer fires late, the
                    # pump would fall behind and drop.)
                    await asyncio.sleep(0)

    async def _dispatch(self, lane: Lane) -> None:
        queue, names = lane.queue, lane.model.names
        slots = asyncio.Semaphore(max(1, min(self.workers, lane.tier.bulkhead.limit)))
        while True:
            if not queue:
                lane.wake.clear()
                await lane.wake.wait()
            await slots.acquire()
            copies = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            ids = [rid for rid, _ in copies]
            batches = [rows for _, rows in copies if isinstance(rows, Batch)]
            if len(batches) == len(copies):
                batch = Batch.join(names, batches)
            else:
                batch = Batch.of_matrix(
                    names, np.concatenate([r for _, r in copies if not isinstance(r, Batch)])
                )
            sizes = [len(rows) for _, rows in copies]
            call = asyncio.create_task(self._send(lane, ids, sizes, batch))
            self._calls.add(call)
            call.add_done_callback(self._calls.discard)
            call.add_done_callback(lambda _: slots.release())

    async def _send(self, lane: Lane, ids: list[str], sizes: list[int], batch: Batch) -> None:
        tier, model = lane.tier, lane.model
        started = time.perf_counter()
        out, reason, _ = await guarded_call(tier, batch, ids[0], tier.timeout_s, model.bad_output)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if tier.backend.inline:
            cost = latency_ms * 1000.0 / len(batch)
            lane.row_us = cost if math.isinf(lane.row_us) else lane.row_us + 0.2 * (cost - lane.row_us)
        if self.write is None:
            return
        # One log record for the whole call; the store keeps it as one shadow call.
        if out is None:
            answers: list[Any] = [None] * len(ids)
        elif len(out) == len(ids):  # a row per request, the usual case
            answers = one_each(out)
        else:
            answers, at = [], 0
            for n in sizes:
                answers.append(out[at : at + n])
                at += n
        why = reason.value if reason is not None else None
        self.write(ids, model.model, model.version, tier.name, "shadow", why, answers, latency_ms)

    async def persist(self) -> None:
        """This replica's copy counts, for reports read from the store."""
        rows = [(m, c, lane.mirrored, lane.dropped) for (m, c), lane in self.lanes.items()]
        rows = [r for r in rows if r[2] or r[3]]
        if not rows:
            return
        try:
            await asyncio.to_thread(self.records.save_counters, rows, self.replica, self.since, time.time())
        except StoreUnavailable as err:
            log.warning("shadow counters not saved: %s", err)

    async def _persist_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.persist()
