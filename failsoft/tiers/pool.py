"""Process isolation for in-process models (``run = "process"``): a small pool of worker processes per tier.

A model stuck in a pure-Python loop holds the interpreter: in a thread it slows every request of every
model in the process. In a worker process it can only spin its own worker: a call past its timeout kills
that worker (SIGKILL) and a new one is started in its place. The tier's bulkhead is the pool's size, and a
killed worker's slot frees only once its replacement is ready, so spinning workers can never pile up, and
a worker that fails call after call is replaced after a wait that doubles each time (0.5 s up to 30 s),
so a crash loop cannot take the machine's CPU.
Workers are forked from a fork server that has imported their libraries already (tiers/forks.py), so a
replacement costs milliseconds of CPU, not a quarter of a second; they run niced (the server is, from its
first instruction), so even while one spins, the serving process keeps its CPU. Where there is no fork
server, a worker is started afresh, niced before it imports anything (``BOOT``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import subprocess
import sys
import time
from typing import Any

import msgspec

from failsoft.config import FeatureSpec, PythonTierSpec
from failsoft.errors import ConfigError, TierUnavailable
from failsoft.tasks import stop
from failsoft.tiers import forks
from failsoft.tiers.base import Done
from failsoft.tiers.frames import LENGTH, MAX_ARGS, frame
from failsoft.validation import Batch

log = logging.getLogger("failsoft.tiers.pool")
START_TIMEOUT_S = 120.0


# A worker that has answered for this long has settled: the waits before replacements start over.
SETTLED_S = 10.0
# Worker processes yield the CPU to the serving process: a model that spins cannot slow the event loop.
NICE = 5
# A worker is niced before its interpreter imports anything: a replacement's start (its imports, its
# model's load) yields the CPU to the serving process, not only its calls.
BOOT = (f"import os, runpy; os.nice({NICE}); "
        "runpy.run_module('failsoft.tiers.worker', run_name='__main__', alter_sys=True)")  # fmt: skip


def backoff_s(failing: int) -> float:
    """How long a worker replacement waits after ``failing`` replacements in a row (none of their workers
    settled): none for the first, then 0.5 s doubling up to 30 s."""
    return 0.0 if failing <= 1 else min(30.0, 0.5 * 2 ** (failing - 2))


class Spawned:
    """A worker process started afresh and its pipes on the event loop. Started by the standard library
    (vfork, in a thread), not by the loop: uvloop's spawn forks the whole serving process, copying its
    page tables on the loop (33 ms median from a 500 MB process, against 4 ms), which every request
    waited for each time a faulty model's worker was replaced."""

    def __init__(
        self, popen: subprocess.Popen[bytes], stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader
    ) -> None:
        self.popen, self.stdin, self.stdout = popen, stdin, stdout
        self.pid = popen.pid

    @classmethod
    async def start(cls, argv: list[str]) -> Spawned:
        popen = await asyncio.to_thread(subprocess.Popen, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert popen.stdin is not None and popen.stdout is not None
        try:
            stdin, stdout = await forks.join_pipes(popen.stdin, popen.stdout)
        except BaseException:
            popen.kill()
            raise
        return cls(popen, stdin, stdout)

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        self.popen.kill()

    async def wait(self) -> int:
        """Until it has exited (reaped by polling: no thread or child watcher held per worker)."""
        delay = 0.001
        while (code := self.popen.poll()) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
        return code


# The fork server the workers of this process are forked from (tiers/forks.py), where there are pidfds.
FORKS = forks.ForkServer(BOOT, START_TIMEOUT_S) if forks.AVAILABLE else None


async def start_worker(args: str) -> Spawned | forks.Forked:
    """A worker process for ``args``: forked by the fork server, or started afresh when it cannot be (not
    Linux, arguments too big for its socket, or the server would not start: said once)."""
    if FORKS is not None and not FORKS.broken and len(args) < MAX_ARGS:
        try:
            return await FORKS.fork(args.encode())
        except OSError as err:
            if FORKS.broken:
                said = {"event": "fork_server_failed", "error": repr(err)[:300], "workers": "started afresh"}
                log.warning(json.dumps(said))
    return await Spawned.start([sys.executable, "-c", BOOT, args])


def worker_args(spec: PythonTierSpec, features: tuple[FeatureSpec, ...], file: str, key: str) -> str:
    """What a worker process (or the load helper, tiers/helper.py) needs to load a tier's model: its spec
    (a model file's path absolute), inputs, and where in which file it is declared."""
    doc = {"spec": msgspec.to_builtins(spec), "features": [msgspec.to_builtins(f) for f in features]}
    return json.dumps(doc | {"file": file, "key": key})


async def read_doc(stdout: asyncio.StreamReader, timeout_s: float | None = None) -> Any:
    """A worker's next frame, decoded (the wait for its first byte bounded by ``timeout_s``)."""
    head = await asyncio.wait_for(stdout.readexactly(LENGTH.size), timeout_s)
    return msgspec.msgpack.decode(await stdout.readexactly(LENGTH.unpack(head)[0]))


class Worker:
    def __init__(self, proc: Spawned | forks.Forked, reads_matrix: bool) -> None:
        self.proc = proc
        self.reads_matrix = reads_matrix
        self.started = time.monotonic()

    async def call(self, batch: Batch) -> list[Any]:
        proc = self.proc
        if self.reads_matrix:
            m = batch.matrix()
            req = frame({"m": m.tobytes(), "n": len(m)})
        else:
            req = frame({"rows": batch.rows})
        proc.stdin.write(req)
        try:
            doc = await read_doc(proc.stdout)
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            code = proc.returncode
            said = f" (exit code {code})" if isinstance(proc, Spawned) and code is not None else ""
            raise TierUnavailable(f"worker process {proc.pid} died{said}") from err
        if "error" in doc:
            raise TierUnavailable(f"in worker process {proc.pid}: {doc['error']}")
        out: list[Any] = doc["ok"]
        return out

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.hang_up()

    def hang_up(self) -> None:
        """Close our end of its stdin: the pipes' transports then close once it has exited (left open, they
        leak a descriptor per replaced worker)."""
        self.proc.stdin.close()


class WorkerPool:
    """``size`` workers of one tier, each answering one call at a time."""

    def __init__(
        self, spec: PythonTierSpec, features: tuple[FeatureSpec, ...], file: str, key: str, size: int
    ) -> None:
        self.name = spec.name
        self.size = size
        self._file, self._key = file, key
        self._args = worker_args(spec, features, file, key)
        self._idle: collections.deque[Worker] = collections.deque()
        self._replacing: set[asyncio.Task[None]] = set()
        self._dying: set[Worker] = set()  # killed, not yet reaped
        self.killed = 0
        # replacements in a row, none of whose workers settled: each waits longer before it starts (a
        # worker that fails every call, or every few as a leak does, would otherwise be restarted at the
        # pace of the requests, and a start costs a second of CPU)
        self.failing = 0
        self.closed = False

    async def start(self) -> None:
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.size)))
        self._idle.extend(workers)

    async def _spawn(self) -> Worker:
        proc = await start_worker(self._args)
        try:
            doc = await read_doc(proc.stdout, START_TIMEOUT_S)
        except asyncio.CancelledError:  # the pool is closing while this one starts: no orphan left behind
            Worker(proc, False).kill()
            await proc.wait()
            raise
        except (asyncio.IncompleteReadError, TimeoutError) as err:
            Worker(proc, False).kill()
            await proc.wait()
            fix = 'run the model in the server first (run = "thread") to see why'
            problem = f"worker process did not start: {err!r}"
            raise ConfigError(self._file, f"{self._key}.run", problem, fix) from err
        if "error" in doc:
            Worker(proc, False).hang_up()
            await proc.wait()
            if doc.get("config"):  # the worker's own ConfigError, naming the file and key
                raise ConfigError(*doc["config"])
            raise ConfigError(self._file, f"{self._key}.run", doc["error"])
        return Worker(proc, bool(doc["reads_matrix"]))

    async def call(self, batch: Batch, done: Done) -> list[Any]:
        """One call on an idle worker. ``done`` runs when the slot is free again: at once after an answer,
        after the replacement is ready when the call was abandoned (its worker killed)."""
        if not self._idle:
            done()
            raise TierUnavailable(f"no worker process ready ({self.size - len(self._idle)} busy or starting)")
        worker = self._idle.popleft()
        try:
            out = await worker.call(batch)
            if self.failing and time.monotonic() - worker.started >= SETTLED_S:
                self.failing = 0  # a worker that answers a few calls, then fails (a leak), has not settled
        except asyncio.CancelledError:  # past its timeout: it may be spinning; kill it, start another
            self._replace(worker, done)
            raise
        except TierUnavailable:
            self._replace(worker, done)
            raise
        self._idle.append(worker)
        done()
        return out

    def _replace(self, worker: Worker, done: Done) -> None:
        worker.kill()
        self._dying.add(worker)
        self.killed += 1
        if self.killed in {1, 10, 100} or self.killed % 1000 == 0:
            log.warning(json.dumps({"event": "worker_replaced", "tier": self.name, "replaced": self.killed}))

        self.failing += 1
        wait_s = backoff_s(self.failing)

        async def replace() -> None:
            try:
                await worker.proc.wait()
                self._dying.discard(worker)
                await asyncio.sleep(wait_s)
                if not self.closed:
                    self._idle.append(await self._spawn())
            except Exception:
                log.exception("tier %s: a new worker process failed to start", self.name)
            finally:
                done()

        task = asyncio.create_task(replace(), name=f"failsoft-worker-{self.name}")
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    async def close(self) -> None:
        self.closed = True
        for task in list(self._replacing):
            await stop(task)
        for worker in list(self._dying):  # killed already: reaped at once
            await worker.proc.wait()
        self._dying.clear()
        while self._idle:
            worker = self._idle.popleft()
            worker.hang_up()
            try:
                await asyncio.wait_for(worker.proc.wait(), 2)
            except TimeoutError:
                worker.kill()
                await worker.proc.wait()
