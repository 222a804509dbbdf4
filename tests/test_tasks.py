"""Background loops stop when told: a cancellation that arrives as the event they wait for is set is not
lost (``asyncio.wait_for`` on Python 3.11 loses it, and the loop, and whoever waits for it to stop, then
runs forever: a hang bench/flake.py found in a portfolio's close)."""

from __future__ import annotations

import asyncio

import pytest

from failsoft.tasks import LoopThread, stop, wait_set


async def loop(event: asyncio.Event) -> None:
    while True:
        await wait_set(event, 0.5)
        event.clear()


async def test_a_cancel_that_arrives_with_the_event_stops_the_loop() -> None:
    for _ in range(5):
        event = asyncio.Event()
        task = asyncio.create_task(loop(event))
        await asyncio.sleep(0.01)
        event.set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 5)


async def test_wait_set_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.01) is False
    event.set()
    assert await wait_set(event, 5) is True
    task = asyncio.create_task(loop(asyncio.Event()))
    await stop(task)
    assert task.cancelled()


def test_a_loop_thread_runs_coroutines_for_synchronous_callers() -> None:
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    thread = LoopThread("test-loop")
    assert thread.run(double(21)) == 42
    thread.stop(asyncio.sleep(0))
    assert thread.loop.is_closed()
