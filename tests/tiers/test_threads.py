"""The tier's threads: calls run in order on at most ``max_workers`` threads, kept between calls, each
started by the starter thread, never by the caller (the event loop)."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError
from typing import Any

import pytest

from failsoft.tiers import threads as threads_module
from failsoft.tiers.threads import Threads


def test_calls_answer_and_raise_and_threads_are_kept() -> None:
    pool = Threads(2, "t")
    assert pool.submit(lambda x: x * 2, 21).result(5) == 42
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(20)}
    assert names <= {"t_0", "t_1"}
    assert pool._threads <= 2
    pool.shutdown()


def test_a_hung_call_takes_one_thread_and_the_next_call_another_up_to_the_limit() -> None:
    release = threading.Event()
    pool = Threads(2, "t")
    hung = pool.submit(release.wait, 10)
    assert pool.submit(lambda: "second").result(5) == "second"  # on a second thread
    hung_too = pool.submit(release.wait, 10)
    queued = pool.submit(lambda: "after")  # both threads held: it waits its turn
    assert not queued.done()
    assert pool._threads == 2
    release.set()
    assert hung.result(5) and hung_too.result(5)
    assert queued.result(5) == "after"
    pool.shutdown()


def test_threads_are_started_by_the_starter_not_by_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    started_from: list[str] = []
    start = threading.Thread.start

    def recorded(self: threading.Thread) -> None:
        started_from.append(threading.current_thread().name)
        start(self)

    monkeypatch.setattr(threading.Thread, "start", recorded)
    ran = threading.Event()
    threads_module._start(threading.Thread(target=ran.set))  # the starter exists (once a process)
    assert ran.wait(5)
    started_from.clear()
    pool = Threads(3, "t")
    together = threading.Barrier(3)  # passed only by three calls running at once, on three threads
    calls = [pool.submit(together.wait, 10) for _ in range(3)]
    assert sorted(c.result(5) for c in calls) == [0, 1, 2]
    assert started_from == ["failsoft-thread-starter"] * 3
    pool.shutdown()


def test_shutdown_runs_what_was_queued_or_cancels_it_and_takes_no_more() -> None:
    release = threading.Event()
    pool = Threads(1, "t")
    first = pool.submit(release.wait, 10)
    queued = pool.submit(lambda: "ran")
    pool.shutdown(wait=False)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    release.set()
    assert first.result(5) and queued.result(5) == "ran"

    release.clear()
    running = threading.Event()
    pool = Threads(1, "u")
    first = pool.submit(lambda: running.set() or release.wait(10))
    running.wait(5)  # a call that has started is not cancelled
    dropped: Any = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert first.result(5)
    with pytest.raises(CancelledError):
        dropped.result(5)
