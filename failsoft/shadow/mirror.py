"""Mirroring live traffic to shadow candidates, off the request path.

After a live answer is decided, each candidate of the model may get a copy (by its ``sample`` rate): an
O(1) append to the candidate's own bounded queue. A full queue drops the copy and counts it; nothing ever
waits. One pump per candidate lets copies pile up for a moment (``linger_s``) and sends them in batches,
through the candidate's own breaker, bulkhead and timeout:

- a candidate that answers on the event loop in microseconds (a compiled model) takes its batch there,
  in slices that cost at most what one live request may (``INLINE_BUDGET_US``), yielding to live
  requests between slices: a thread hop would cost more than the arithmetic;
- any other candidate (a model in threads, a remote engine) gets up to ``workers`` batches in flight;
  while they are all busy the queue fills and then drops.

The rows travel with the matrix the live tier built for them, so a batch is stacked, not rebuilt. Every
shadow answer, or why there is none, goes to the prediction log with role ``shadow``. A candidate that
hangs, fails or dies only fills and drops its own queue.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any

from failsoft.chain import Chain, Tier, guarded_call
from failsoft.schema import Batch
from failsoft.store import StoreUnavailable
from failsoft.tasks import stop
from failsoft.tiers.python import INLINE_BUDGET_US

if TYPE_CHECKING:
    from failsoft.portfolio import Portfolio

log = logging.getLogger("failsoft.shadow")

# (request id, its validated rows)
Copy = tuple[str, Batch]


class Lane:
    """One candidate's queue and counters."""

    __slots__ = ("chain", "dropped", "mirrored", "queue", "row_us", "tier", "wake")

    def __init__(self, chain: Chain, tier: Tier) -> None:
        self.chain = chain
        self.tier = tier
        self.queue: collections.deque[Copy] = collections.deque()
        self.wake = asyncio.Event()
        self.mirrored = 0  # copies queued
        self.dropped = 0  # copies not queued: the queue was full
        # What a row costs the candidate on the loop, in microseconds (inline candidates): a moving
        # average of its shadow calls, starting from the one-row cost measured when it loaded.
        self.row_us = tier.backend.single_row_us


class Mirror:
    def __init__(
        self, portfolio: Portfolio, queue: int, max_batch: int, linger_s: float = 0.005, workers: int = 4
    ) -> None:
        self.portfolio = portfolio
        self.limit = queue
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.workers = workers
        self.lanes: dict[tuple[str, str], Lane] = {}
        self.since = time.time()
        self._tasks: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()

    def offer(self, chain: Chain, candidates: tuple[Tier, ...], batch: Batch, request_id: str) -> None:
        """Queue a copy for each candidate (the request path: O(1), never blocks, never raises)."""
        limit = self.limit
        for tier in candidates:
            if tier.sample < 1.0 and random.random() >= tier.sample:
                continue
            lane: Lane | None = tier.lane
            if lane is None:
                continue
            queue = lane.queue
            if len(queue) >= limit:
                lane.dropped += 1
                continue
            queue.append((request_id, batch))
            lane.mirrored += 1
            if len(queue) == 1:
                lane.wake.set()

    async def start(self) -> None:
        """A lane and its pump for every tier that is or may become a candidate (each model's primary and
        its candidates: a promotion turns the old primary into one)."""
        for chain in self.portfolio.chains.values():
            for tier in self.portfolio.pools[chain.model].values():
                lane = Lane(chain, tier)
                tier.lane = lane
                self.lanes[(chain.model, tier.name)] = lane
                name = f"failsoft-shadow-{chain.model}-{tier.name}"
                self._tasks.append(asyncio.create_task(self._pump(lane), name=name))
            chain.mirror = self.offer
        self._tasks.append(asyncio.create_task(self._persist_every(5.0), name="failsoft-shadow-counters"))

    async def close(self) -> None:
        for chain in self.portfolio.chains.values():
            chain.mirror = None
        for task in [*self._tasks, *self._calls]:
            await stop(task)
        self._tasks.clear()
        await self.persist()

    async def _pump(self, lane: Lane) -> None:
        queue, tier = lane.queue, lane.tier
        slots = asyncio.Semaphore(max(1, min(self.workers, tier.bulkhead.limit)))
        while True:
            if not queue:
                lane.wake.clear()
                await lane.wake.wait()
            # Let copies pile up for a moment: one call per batch, not one per request.
            await asyncio.sleep(self.linger_s)
            backend = tier.backend
            if backend.inline:
                size = max(1, min(self.max_batch, int(INLINE_BUDGET_US / lane.row_us)))
                while queue:
                    await self._send(lane, [queue.popleft() for _ in range(min(len(queue), size))])
                    await asyncio.sleep(0)  # live requests first
                continue
            while queue:
                await slots.acquire()
                copies = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                call = asyncio.create_task(self._send(lane, copies))
                self._calls.add(call)
                call.add_done_callback(self._calls.discard)
                call.add_done_callback(lambda _: slots.release())

    async def _send(self, lane: Lane, copies: list[Copy]) -> None:
        tier, chain = lane.tier, lane.chain
        batch = Batch.join(chain.schema.names, [b for _, b in copies])
        started = time.perf_counter()
        out, reason, _ = await guarded_call(tier, batch, copies[0][0], tier.timeout_s, chain._bad_output)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if tier.backend.inline:
            cost = latency_ms * 1000.0 / len(batch)
            lane.row_us = cost if math.isinf(lane.row_us) else lane.row_us + 0.2 * (cost - lane.row_us)
        log = self.portfolio.log
        if log is None:
            return
        # One log record for the whole call; the writer makes it a row per request.
        if out is None:
            answers: list[Any] = [None] * len(copies)
        elif len(out) == len(copies):  # a row per request, the usual case
            answers = [[v] for v in out]
        else:
            answers, at = [], 0
            for _, rows in copies:
                answers.append(out[at : at + len(rows)])
                at += len(rows)
        why = reason.value if reason is not None else None
        log.records.append_many(
            [request_id for request_id, _ in copies], chain.model, chain.version, tier.name, "shadow", why,
            answers, latency_ms,
        )  # fmt: skip

    async def persist(self) -> None:
        """This replica's copy counts, for reports read from the store."""
        rows = [(m, c, lane.mirrored, lane.dropped) for (m, c), lane in self.lanes.items()]
        rows = [r for r in rows if r[2] or r[3]]
        if not rows:
            return
        store, now = self.portfolio.state_store, time.time()

        def write(execute: Any) -> None:
            for m, c, n, d in rows:
                execute(
                    "INSERT INTO shadow_counters VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (model, candidate, replica) DO UPDATE SET mirrored = excluded.mirrored, "
                    "dropped = excluded.dropped, updated_at = excluded.updated_at",
                    [m, c, self.portfolio.replica, n, d, self.since, now],
                )

        try:
            await asyncio.to_thread(store.transaction, write)
        except StoreUnavailable as err:
            log.warning("shadow counters not saved: %s", err)

    async def _persist_every(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.persist()
