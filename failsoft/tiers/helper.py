"""The load helper: a process of its own that loads the model files the loader loads on first use, so that
their load's work is not done in the serving process.

Loading a small model in the serving process took 2.5 ms of its interpreter (joblib's unpickler in pure
Python; the proof that its compiled form equals the model, on sample rows; the costs measured), time the
event loop waited for whenever it woke in the middle of one. The helper is forked by the fork server like a
worker (tiers/forks.py), with the libraries the models need imported. For each model it loads the file,
compiles, proves and measures it as the tier would (``PythonBackend.load_measured``) and answers with the
object pickled (13 µs to unpickle for a small logistic regression) and what it found (``Measured``): the
serving process builds the same function from them without running anything on sample rows.

It runs at ``SCHED_IDLE`` (tiers/worker.py ``helper``): at nice 5 it kept a core for the rest of its slice
each time the serving process woke, and with 20 cold loads a second the hot models' p99 at their clients
rose 1.4-2.1x; at ``SCHED_IDLE`` it gives the core up at once (0.84-1.36x in seven runs, median 1.08).
On a machine with no idle CPU it would wait forever: where it had almost no CPU in two seconds while a load
waited for it, it is killed and loads are made in this process for 30 s (said: ``load_helper_starved``).

A model the helper cannot hand over (an ONNX session cannot be pickled) is loaded in the serving process
as before, as is every model where the helper cannot start (said once). A model whose load ends the helper
(a crash in a library) fails to load, is tried again later like any failed load, and the serving process
is untouched; the next load starts a new helper. A load that takes longer than ``TIMEOUT_S`` fails and the
helper is killed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import msgspec

from failsoft.errors import ConfigError
from failsoft.tiers import forks, pool
from failsoft.tiers.compile import Measured
from failsoft.tiers.frames import frame

__all__ = ["LoadHelper", "Prepared"]

log = logging.getLogger("failsoft.tiers.helper")

# The pickled model and what the helper measured of it (``Measured``).
Prepared = tuple[bytes, Measured]
TIMEOUT_S = pool.START_TIMEOUT_S  # one model's load in the helper, at most
# At SCHED_IDLE the helper runs only on CPU nothing else wants: where it had less than STARVED_CPU_S of CPU
# in PATIENCE_S while a load waited for it, the machine is busy, and loads are made in this process (at
# its priority, as before the helper) for BUSY_S.
PATIENCE_S = 2.0
STARVED_CPU_S = 0.05
BUSY_S = 30.0
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Starved(Exception):
    """The helper had (almost) no CPU while a load waited for it."""


def cpu_seconds(pid: int) -> float | None:
    """The CPU a process has had (Linux: /proc/PID/stat); None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return None


async def _answer(proc: pool.Spawned | forks.Forked) -> Any:
    """The helper's next frame. Raises Starved where it had less than STARVED_CPU_S of CPU in a PATIENCE_S
    wait, TimeoutError past TIMEOUT_S."""
    reading = asyncio.ensure_future(pool.read_doc(proc.stdout))
    try:
        waited, cpu = 0.0, cpu_seconds(proc.pid)
        while True:
            done, _ = await asyncio.wait({reading}, timeout=PATIENCE_S)
            if done:
                return reading.result()
            waited += PATIENCE_S
            if waited >= TIMEOUT_S:
                raise TimeoutError
            now = cpu_seconds(proc.pid)
            if cpu is not None and now is not None and now - cpu < STARVED_CPU_S:
                raise Starved
            cpu = now
    finally:
        reading.cancel()


class LoadFailed(Exception):
    """The helper could not load the model: why, as the load in the serving process would have said."""


class LoadHelper:
    """One helper process, started when first needed and again after it died; ``libraries`` (the loader's
    set) are imported as it starts."""

    def __init__(self, libraries: set[str]) -> None:
        self.libraries = libraries
        self.proc: pool.Spawned | forks.Forked | None = None
        self.unavailable = False  # it would not start: models load in the serving process
        self.loads = 0  # models it has handed over
        self.starved = 0  # times it got no CPU while a load waited for it
        self._busy_until = 0.0  # loads are made in this process until then (monotonic)
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self) -> bool:
        """Started (if it is not running yet); False where it cannot be."""
        async with self._lock:
            if self.proc is not None:
                return True
            if self.unavailable or time.monotonic() < self._busy_until:
                return False
            try:
                proc = await pool.start_worker(json.dumps({"helper": sorted(self.libraries)}))
            except OSError as err:
                return self._unavailable(err)
            try:
                ready = await _answer(proc)
            except Starved:
                await _end(proc)
                return self._starved()
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError) as err:
                await _end(proc)
                return self._unavailable(err)
            except asyncio.CancelledError:
                await _end(proc)
                raise
            if not ready.get("ready"):
                await _end(proc)
                return self._unavailable(RuntimeError(str(ready.get("error"))))
            self.proc = proc
            return True

    def _starved(self) -> bool:
        """The helper gets no CPU (the machine is busy): loads are made in this process for ``BUSY_S``."""
        self._busy_until = time.monotonic() + BUSY_S
        self.starved += 1
        said = {"event": "load_helper_starved", "waited_s": PATIENCE_S, "times": self.starved,
                "models": f"loaded in this process for {BUSY_S:g} s"}  # fmt: skip
        log.warning(json.dumps(said))
        return False

    def _unavailable(self, err: BaseException) -> bool:
        self.unavailable = True
        said = {"event": "load_helper_failed", "error": repr(err)[:300], "models": "loaded in this process"}
        log.warning(json.dumps(said))
        return False

    async def prepare(self, args: str) -> Prepared | None:
        """The model that ``args`` (``pool.worker_args``) names, loaded in the helper; None where it is to
        be loaded in this process (no helper, or a model that cannot be handed over). Raises LoadFailed
        (or ConfigError) for a model that failed to load there, or whose load ended the helper."""
        if time.monotonic() < self._busy_until:
            return None
        if self.proc is not None and self.proc.returncode is not None:  # ended since its last load
            await self._end()
        if not await self.start():
            return None
        proc = self.proc
        assert proc is not None
        proc.stdin.write(frame({"load": args}))
        try:
            doc = await _answer(proc)
        except Starved:
            await self._end()
            self._starved()
            return None
        except (asyncio.IncompleteReadError, ConnectionError) as err:
            await self._end()
            raise LoadFailed(f"its load ended the load helper (process {proc.pid})") from err
        except TimeoutError as err:
            await self._end()
            raise LoadFailed(f"its load took longer than {TIMEOUT_S:g} s in the load helper") from err
        except asyncio.CancelledError:  # the loader is closing: the helper is mid-load, ended with it
            await self._end()
            raise
        if "error" in doc:
            if doc.get("config"):
                raise ConfigError(*doc["config"])
            raise LoadFailed(doc["error"])
        if doc["model"] is None:
            return None
        self.loads += 1
        return doc["model"], msgspec.convert(doc["measured"], Measured)

    async def _end(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            await _end(proc)

    def close(self) -> None:
        """Killed (it holds nothing that is not in its model files); reaped by its fork server or, started
        afresh, by the standard library."""
        proc, self.proc = self.proc, None
        if proc is not None:
            pool.Worker(proc, False).kill()


async def _end(proc: pool.Spawned | forks.Forked) -> None:
    pool.Worker(proc, False).kill()
    await proc.wait()
