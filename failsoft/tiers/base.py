"""The contract every tier backend keeps."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, ClassVar, TypeVar

from failsoft.types import Reason, TierKind
from failsoft.validation import Batch

Done = Callable[[], None]
A = TypeVar("A")
R = TypeVar("R")


def call_soon(loop: asyncio.AbstractEventLoop, fn: Done) -> None:
    """``fn`` on ``loop``, from a thread. A hung call may finish after the server has shut its loop down;
    there is nothing left to free then."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn)


async def in_thread(executor: Executor, fn: Callable[[A], R], arg: A, done: Done) -> R:
    """``fn(arg)`` in one of ``executor``'s threads. ``done`` is called when the thread finishes, not when
    the caller gives up on it: the bulkhead slot stays taken while a hung call still holds its thread."""
    loop = asyncio.get_running_loop()
    try:
        future = executor.submit(fn, arg)
    except BaseException:
        done()
        raise
    future.add_done_callback(lambda _: call_soon(loop, done))
    return await asyncio.wrap_future(future)


class Backend:
    """Computes one model's answer one way. Raises a TierError (or anything) when it cannot.

    ``predict`` must call ``done`` exactly once, when the work has really finished: a backend whose work
    can outlive a timeout (a thread running a hung model) calls it late, which keeps its bulkhead slot
    taken and so bounds how many hung computations can pile up.
    """

    kind: ClassVar[TierKind]
    name: str
    # Answers computed on the event loop in microseconds (compiled arithmetic) skip the timeout machinery.
    inline: bool = False
    # What one row costs an inline backend, in microseconds (measured at start; unknown: infinite).
    single_row_us: float = float("inf")
    # The most rows an inline backend answers on the event loop; a bigger batch goes through ``predict``.
    inline_rows: int = sys.maxsize
    # Reads only a batch's matrix, never its rows (a shadow copy for it keeps just the numbers).
    reads_matrix: bool = False
    # Loaded on first use (tiers/loader.py): the chain asks ``use`` before each call.
    lazy: bool = False

    def use(self) -> tuple[Reason, str] | None:
        """None when the tier can be called now (a lazy one: its model is loaded, and now recently used);
        else why it is passed by (its model is loading, or failed to load)."""
        return None

    async def start(self) -> None:
        """Open connections, load files. Called once before traffic."""

    async def close(self) -> None:
        """Release connections and threads."""

    async def predict(self, batch: Batch, request_id: str, done: Done) -> list[Any]:
        try:
            return await self.call(batch, request_id)
        finally:
            done()

    async def call(self, batch: Batch, request_id: str) -> list[Any]:
        raise NotImplementedError

    def predict_inline(self, batch: Batch) -> list[Any]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": str(self.kind)}
