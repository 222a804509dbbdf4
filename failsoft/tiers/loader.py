"""Models loaded on first use, under a memory budget (``[server] load = "first_use"``,
``memory_budget_mb``).

A lazy tier stays cold (a few hundred bytes: its spec and counters) until a request needs it. That
request is not kept waiting: the chain passes the tier by with the reason ``loading`` (its next ready
tier answers, the safe default at least) and asks the loader for it. The loader loads one model at a time
(the smallest file first), off the event loop: a model file is loaded, compiled and measured by the load
helper, a process of its own (tiers/helper.py), and handed over; the loader's thread unpickles and installs
it (or loads it, where the helper cannot), and measures what it cost: what the process's resident size
grew by meanwhile, at least the size of its file. Loaded lazy tiers are kept
while their sum fits the budget (models loaded at start, ``preload = true``, are not counted); past it,
the least recently used is unloaded (its calls in flight finish on the model they started with) and the
memory is given back to the system (``malloc_trim``). A model that fails to load is retried after
``RETRY_S``; until then its tier is passed by with the error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import heapq
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from failsoft.metrics import Histogram
from failsoft.tiers.helper import LoadHelper, Prepared
from failsoft.tiers.model_files import import_libraries
from failsoft.types import Reason

__all__ = ["Lazy", "Loader", "resident_bytes"]

log = logging.getLogger("failsoft.tiers.loader")

RETRY_S = 30.0  # a model that failed to load is tried again after this long
LOAD_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident size now (Linux: /proc/self/statm); 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _trim() -> None:
    """Give freed memory back to the system: glibc's ``malloc_trim`` (free pages inside the heap stay the
    process's otherwise). No collection: a model's objects go when their last reference does, and a full
    collection holds the interpreter lock for as long as it takes (tens of ms with many models loaded)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Lazy(Protocol):
    """A tier backend the loader can load and unload (tiers/python.py's ``PythonBackend``)."""

    name: str
    model: str
    last_use: float

    def prepare_args(self) -> str | None:
        """What the load helper needs to load it (tiers/helper.py); None: loaded in this process."""

    def load(self, prepared: Prepared | None) -> Callable[[], None]:
        """Load in the loader's thread (from what the helper handed over, if it did); returns what installs
        the model, called on the event loop."""

    def unload(self) -> None:
        """Forget the model (on the event loop); calls in flight finish on it."""

    def file_bytes(self) -> int:
        """Its model file's size, the least it is taken to cost (0: not a file)."""


class Loader:
    """Loads lazy tiers one at a time off the event loop and keeps them under ``budget_bytes`` (0: no
    limit). ``want`` is the request path's side: called for a tier that is not loaded, it starts the load
    once and says why the tier is passed by."""

    def __init__(self, budget_bytes: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget_bytes
        self.clock = clock
        self.cost: dict[Lazy, int] = {}  # loaded lazy tiers -> the bytes each was measured to hold
        self.libraries: set[str] = set()  # modules the lazy tiers' models need (imported by ``warm``)
        self.warming = False
        self._pending: set[Lazy] = set()  # asked for, not loaded yet
        self._queue: list[tuple[int, int, Lazy]] = []  # (file bytes, order asked, tier): a heap
        self._order = itertools.count()
        self._worker: asyncio.Task[None] | None = None  # loads what is queued, one at a time
        self._helping: asyncio.Task[bool] | None = None  # the helper's start, with the libraries' import
        self._failed: dict[Lazy, tuple[float, str]] = {}  # -> (when it may be tried again, why it failed)
        self._executor: ThreadPoolExecutor | None = None
        self.helper = LoadHelper(self.libraries)  # loads each model in a process of its own
        self.loads = 0
        self.unloads = 0
        self.failures = 0
        self.seconds = Histogram(LOAD_BUCKETS)  # how long each load took, from asked to answering

    @property
    def held(self) -> int:
        return sum(list(self.cost.values()))  # a snapshot: /metrics reads it from a thread

    def want(self, tier: Lazy) -> tuple[Reason, str]:
        """Why ``tier`` cannot answer now, and its load started (unless one is under way, or it failed
        less than ``RETRY_S`` ago)."""
        if tier in self._pending:
            return Reason.LOADING, "its model is loading"
        failed = self._failed.get(tier)
        if failed is not None:
            if self.clock() < failed[0]:
                return Reason.ERROR, f"its model failed to load: {failed[1]}"
            del self._failed[tier]
        self._pending.add(tier)
        # the smallest first: a small model does not wait behind a big one asked for before it
        heapq.heappush(self._queue, (tier.file_bytes(), next(self._order), tier))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._drain(), name="failsoft-loader")
        return Reason.LOADING, "its model is loading (first use)"

    async def _drain(self) -> None:
        while self._queue:
            _, _, tier = heapq.heappop(self._queue)
            await self._load(tier)

    async def _load(self, tier: Lazy) -> None:
        asked = self.clock()
        try:
            args = tier.prepare_args()
            prepared = await self.helper.prepare(args) if args is not None else None
            install, cost, took = await asyncio.get_running_loop().run_in_executor(
                self._thread(), _measure, tier, prepared
            )
        except asyncio.CancelledError:
            self._pending.discard(tier)
            raise
        except Exception as err:
            self._pending.discard(tier)
            self.failures += 1
            why = f"{type(err).__name__}: {err}"[:300]
            self._failed[tier] = (self.clock() + RETRY_S, why)
            log.error(json.dumps({"event": "model_load_failed", "model": tier.model, "tier": tier.name,
                                  "error": why, "retry_in_s": RETRY_S}))  # fmt: skip
            return
        self._pending.discard(tier)
        install()
        # what the model is made of lives until it is unloaded: out of the collector's sight (as the server
        # does at start), so full collections do not grow with the models loaded
        gc.freeze()
        tier.last_use = self.clock()
        self.cost[tier] = cost
        self.loads += 1
        self.seconds.observe(self.clock() - asked)
        if log.isEnabledFor(logging.INFO):
            said = {"event": "model_loaded", "model": tier.model, "tier": tier.name, "bytes": cost,
                    "load_ms": round((self.clock() - asked) * 1000, 1),  # from asked to installed
                    "here_ms": round(took * 1000, 1),  # of which in this process's loader thread
                    "loaded_by": "helper" if prepared is not None else "this process"}  # fmt: skip
            log.info(json.dumps(said))
        self._keep_to_budget(tier)

    def warm(self) -> None:
        """Import ``libraries`` (what the lazy models' files will need) in the loader's thread as the server
        starts, ahead of the loads, which queue behind it: a library's import (scikit-learn's takes a second
        or two) is the process's once, not a model's. One that is missing is left to the load that needs it
        to say. Counted in ``failsoft_models_loading`` while it runs."""
        if self.libraries:
            self.warming = True
            done = self._thread().submit(import_libraries, sorted(self.libraries))
            done.add_done_callback(lambda _: setattr(self, "warming", False))
            helper = self.helper.start()
            self._helping = asyncio.get_running_loop().create_task(helper, name="failsoft-helper")

    def _keep_to_budget(self, newest: Lazy) -> None:
        if not self.budget or self.held <= self.budget:
            return
        unloaded: list[str] = []
        while self.held > self.budget:
            evictable = [t for t in self.cost if t is not newest]
            if not evictable:
                break
            oldest = min(evictable, key=lambda t: t.last_use)
            self.forget(oldest)
            unloaded.append(oldest.model)
        if self.cost.get(newest, 0) > self.budget:
            log.warning(json.dumps({"event": "model_over_budget", "model": newest.model, "tier": newest.name,
                                    "bytes": self.cost[newest], "budget": self.budget}))  # fmt: skip
        if unloaded:
            self._thread().submit(_trim)

    def forget(self, tier: Lazy) -> None:
        """Unload ``tier`` (the budget, a reload that removed its model)."""
        if self.cost.pop(tier, None) is not None:
            tier.unload()
            self.unloads += 1

    def _thread(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="failsoft-loader")
        return self._executor

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        if self._helping is not None:
            self._helping.cancel()
        self.helper.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def metrics(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "failsoft_models_loaded", "Models loaded on first use, held now", len(self.cost)
        )
        yield GaugeMetricFamily(
            "failsoft_models_loading",
            "Models asked for, not loaded yet (and 1 while the libraries they need are imported at start)",
            len(self._pending) + self.warming,
        )
        yield GaugeMetricFamily(
            "failsoft_models_loaded_bytes",
            "Memory the models loaded on first use hold, as measured",
            self.held,
        )
        yield GaugeMetricFamily(
            "failsoft_models_memory_budget_bytes", "[server] memory_budget_mb in bytes (0: none)", self.budget
        )
        yield CounterMetricFamily("failsoft_model_loads", "Models loaded on first use", self.loads)
        yield CounterMetricFamily(
            "failsoft_model_unloads", "Models unloaded for the memory budget or a reload", self.unloads
        )
        yield CounterMetricFamily(
            "failsoft_model_load_failures", "Loads that failed (tried again later)", self.failures
        )
        hist = HistogramMetricFamily(
            "failsoft_model_load_seconds", "From a model's first use to its tier ready"
        )
        hist.add_metric([], self.seconds.cumulative(), self.seconds.total)
        yield hist


def _measure(tier: Lazy, prepared: Prepared | None) -> tuple[Callable[[], None], int, float]:
    """``tier.load()`` in the loader's thread: what installs it, the bytes it holds, the seconds it took."""
    before, started = resident_bytes(), time.perf_counter()
    install = tier.load(prepared)
    took = time.perf_counter() - started
    grew = resident_bytes() - before
    return install, max(grew, tier.file_bytes(), 1), took
