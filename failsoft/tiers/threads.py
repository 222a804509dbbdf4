"""The threads an in-process tier's calls run in, started without the event loop waiting for them.

``threading.Thread.start`` returns only once the new thread has run. A ThreadPoolExecutor starts its threads
as calls are submitted, from the event loop, which stands still until then: on a busy machine that is
milliseconds (4-9 ms measured on a 2-core box while faulty models held their threads with hung calls,
every model's requests waiting). Here the loop only queues a call; a thread the pool lacks is started by
the process's one starter thread. The threads are daemons, so a call hung in a model does not hold up the
process's exit.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]

_to_start: queue.SimpleQueue[threading.Thread] = queue.SimpleQueue()
_starter: threading.Thread | None = None
_starter_lock = threading.Lock()


def _starting() -> None:
    while True:
        _to_start.get().start()


def _start(thread: threading.Thread) -> None:
    """``thread`` started by the starter thread (started itself on first use: the one start a caller
    waits for, once a process)."""
    global _starter
    _to_start.put(thread)
    with _starter_lock:
        if _starter is None:
            _starter = threading.Thread(target=_starting, name="failsoft-thread-starter", daemon=True)
            _starter.start()


class Threads(Executor):
    """Up to ``max_workers`` threads, started as calls need them and kept; the calls queue in order."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._max, self._prefix = max_workers, thread_name_prefix
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads done with a call and waiting for the next (never more than there are)
        self._closed = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._calls.put((future, fn, args, kwargs))
            if self._idle:
                self._idle -= 1
            elif self._threads < self._max:
                name = f"{self._prefix}_{self._threads}"
                self._threads += 1
                _start(threading.Thread(target=self._work, name=name, daemon=True))
        return future

    def _work(self) -> None:
        calls = self._calls
        while (call := calls.get()) is not None:
            future, fn, args, kwargs = call
            del call
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as err:
                    future.set_exception(err)
                else:
                    future.set_result(result)
                    del result
            del future, fn, args, kwargs  # nothing of a call outlives it while the thread waits
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; the threads end once the calls queued before have run (or, with
        ``cancel_futures``, been cancelled). Never waits: a call hung in a model cannot be waited for."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            while cancel_futures:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call[0].cancel()
            for _ in range(self._threads):
                self._calls.put(None)
