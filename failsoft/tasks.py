"""Background tasks (refresh loops, pollers, notifiers): stopping one is the same everywhere; and an event
loop in a thread of its own, for synchronous callers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (if any) and wait until it has really ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def wait_set(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passed; True when it was set. For the loops that wait
    this way until they are cancelled: ``asyncio.wait_for`` on Python 3.11 can swallow a cancellation that
    arrives as the event is set, and the loop, and whoever waits for it to stop, then runs forever."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class LoopThread:
    """An event loop of its own in a daemon thread: how synchronous code runs failsoft's asyncio parts
    (``Portfolio.predict_sync``, the client's synchronous face)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self, last: Coroutine[Any, Any, Any] | None = None) -> None:
        """Run ``last`` (a clean-up) on the loop, then stop the loop and its thread."""
        if last is not None:
            self.run(last)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
