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
a candidate reads only matrices (Python models), the intake (shadow/intake.py) keeps just the numbers the
live tier already read, packed as bytes, and a batch is a slice of the matrix they make; otherwise it keeps
the requests' batches and stacks them. Every shadow answer, or why there is none, goes to the prediction
log with role ``shadow``: one record per call, kept by the store as one shadow call (store/base.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from failsoft.chain import Tier, guarded_call
from failsoft.shadow.intake import Copy, Intake, Pile
from failsoft.store import StoreUnavailable
from failsoft.store.base import PredictionRow
from failsoft.store.records import one_each
from failsoft.store.shadow import ShadowRecords
from failsoft.tasks import stop
from failsoft.tiers.python import INLINE_BUDGET_US
from failsoft.validation import Batch

log = logging.getLogger("failsoft.shadow")

# The most loop turns a candidate takes for one pile (see Mirror._pump)
SLICES = 4
# Writes a shadow call to the prediction log (``RecordQueue.append``).
Write = Callable[[PredictionRow], None]


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
        self.write(PredictionRow(None, ids, model.model, model.version, tier.name, "shadow", False, reason,
                                 answers, None, latency_ms, time.time()))  # fmt: skip

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
