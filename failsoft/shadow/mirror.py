"""Mirroring live traffic to shadow candidates, off the request path.

After a live answer is decided, each candidate of the model may get a copy (by its ``sample`` rate): an
O(1) append to the candidate's own bounded queue. A full queue drops the copy and counts it; nothing ever
waits. A few workers per candidate drain its queue, sending the copies that have piled up in one call (at
most ``max_batch`` rows), through the candidate's own breaker, bulkhead and timeout. Every shadow answer,
or why there is none, goes to the prediction log with role ``shadow``. A candidate that hangs, fails or
dies only fills and drops its own queue.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from failsoft.chain import Chain, Tier, guarded_call
from failsoft.schema import Batch
from failsoft.store import StoreUnavailable
from failsoft.tasks import stop

if TYPE_CHECKING:
    from failsoft.portfolio import Portfolio

log = logging.getLogger("failsoft.shadow")

# (request id, rows)
Copy = tuple[str, list[Any]]


class Lane:
    """One candidate's queue and counters."""

    __slots__ = ("chain", "dropped", "mirrored", "queue", "tier", "waiting", "wake")

    def __init__(self, chain: Chain, tier: Tier) -> None:
        self.chain = chain
        self.tier = tier
        self.queue: collections.deque[Copy] = collections.deque()
        self.wake = asyncio.Event()
        self.waiting = 0
        self.mirrored = 0  # copies queued
        self.dropped = 0  # copies not queued: the queue was full


class Mirror:
    def __init__(
        self, portfolio: Portfolio, queue: int, max_batch: int, linger_s: float = 0.002, workers: int = 4
    ) -> None:
        self.portfolio = portfolio
        self.limit = queue
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.workers = workers
        self.lanes: dict[tuple[str, str], Lane] = {}
        self.since = time.time()
        self._tasks: list[asyncio.Task[None]] = []

    def offer(self, chain: Chain, candidates: tuple[Tier, ...], batch: Batch, request_id: str) -> None:
        """Queue a copy for each candidate (the request path: O(1), never blocks, never raises)."""
        limit = self.limit
        for tier in candidates:
            if tier.sample < 1.0 and random.random() >= tier.sample:
                continue
            lane: Lane | None = tier.lane
            if lane is None:
                continue
            if len(lane.queue) >= limit:
                lane.dropped += 1
                continue
            lane.queue.append((request_id, batch.rows))
            lane.mirrored += 1
            if lane.waiting:
                lane.wake.set()

    async def start(self) -> None:
        """A lane and workers for every tier that is or may become a candidate (each model's primary and
        its candidates: a promotion turns the old primary into one)."""
        for chain in self.portfolio.chains.values():
            for tier in self.portfolio.pools[chain.model].values():
                lane = Lane(chain, tier)
                tier.lane = lane
                self.lanes[(chain.model, tier.name)] = lane
                for i in range(min(self.workers, tier.bulkhead.limit)):
                    name = f"failsoft-shadow-{chain.model}-{tier.name}-{i}"
                    self._tasks.append(asyncio.create_task(self._work(lane), name=name))
            chain.mirror = self.offer
        self._tasks.append(asyncio.create_task(self._persist_every(5.0), name="failsoft-shadow-counters"))

    async def close(self) -> None:
        for chain in self.portfolio.chains.values():
            chain.mirror = None
        for task in self._tasks:
            await stop(task)
        self._tasks.clear()
        await self.persist()

    async def _work(self, lane: Lane) -> None:
        queue, tier, chain = lane.queue, lane.tier, lane.chain
        while True:
            if not queue:
                lane.waiting += 1
                lane.wake.clear()
                try:
                    await lane.wake.wait()
                finally:
                    lane.waiting -= 1
                continue
            if len(queue) < self.max_batch:
                # Let copies pile up for a moment: one call per batch, not one per request.
                await asyncio.sleep(self.linger_s)
                if not queue:
                    continue
            copies = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
            rows = [r for _, batch_rows in copies for r in batch_rows]
            started = time.perf_counter()
            out, reason, _ = await guarded_call(
                tier, Batch(chain.schema.names, rows), copies[0][0], tier.timeout_s, chain._bad_output, True
            )
            latency_ms = (time.perf_counter() - started) * 1000.0
            sink = chain.sink
            if sink is None:
                continue
            at = 0
            why = reason.value if reason is not None else None
            for request_id, batch_rows in copies:
                n = len(batch_rows)
                answer = out[at : at + n] if out is not None else None
                at += n
                sink(request_id, chain.model, chain.version, tier.name, "shadow", False, why, answer, None,
                     latency_ms)  # fmt: skip

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
