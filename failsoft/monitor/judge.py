"""Judging a closed window, in a process of its own.

Judging a window (every statistic of every feature, the report) is tens of milliseconds of Python and
numpy. In a thread of the serving process it held the interpreter lock for stretches of up to the switch
interval (5 ms) while the event loop waited to answer requests; in a process of its own it never competes
with the request path for the lock (as the log writer does not). What crosses to it is small: the window's
float matrix (one array), its predictions and counts; the profile crosses once per process and model.

If the judging process cannot start or dies, the window is judged in a thread as before, and the next
window starts a new process: judging never stops because of it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from failsoft.config import MonitorSpec
from failsoft.monitor import drift
from failsoft.monitor.performance import estimate
from failsoft.monitor.profile import PREDICTION, Column, Profile, categorical_column, numeric_column

log = logging.getLogger("failsoft.monitor")


@dataclass
class Sample:
    """What a window kept, in forms that cross to another process cheaply."""

    features: dict[str, str]  # name -> "numeric" | "categorical", in the model's order
    task: str
    names: tuple[str, ...]  # the matrix's columns
    matrix: Any  # (rows, len(names)) floats, numeric models; None otherwise
    rows_seen: list[dict[str, Any]]  # the rows themselves (other models)
    preds: list[Any]  # per row, the primary's answer or None
    invalid: int


def columns(s: Sample) -> dict[str, Column]:
    cols: dict[str, Column] = {}
    if s.matrix is not None:
        if len(s.matrix):
            index = {n: i for i, n in enumerate(s.names)}
            for name in s.features:
                cols[name] = Column(name, "numeric", np.ascontiguousarray(s.matrix[:, index[name]]))
    else:
        for name, kind in s.features.items():
            values = [r.get(name) for r in s.rows_seen]
            make = numeric_column if kind == "numeric" else categorical_column
            cols[name] = make(name, values)
    # the primary's answers, None for rows another tier answered (left out of prediction drift)
    preds = s.preds
    if any(p is not None for p in preds):
        if s.task == "ranking":
            cols[PREDICTION] = categorical_column(PREDICTION, (p[0] if p else None for p in preds))
        elif s.task == "multiclass":
            cols[PREDICTION] = categorical_column(PREDICTION, preds)
        else:
            cols[PREDICTION] = numeric_column(PREDICTION, preds)
    return cols


def report(profile: Profile, spec: MonitorSpec, s: Sample) -> dict[str, Any]:
    """Drift, quality and estimated performance of one window: the report ``drift.evaluate`` makes, with
    ``estimated`` added."""
    cols = columns(s)
    rows = len(s.matrix) if s.matrix is not None else len(s.rows_seen)
    chunk = np.zeros(rows, dtype=np.int64)
    invalid = np.array([s.invalid], dtype=np.int64)
    out = drift.evaluate(profile, cols, chunk, 1, spec, invalid)[0]
    cal = profile.calibration
    out["estimated"] = None
    if s.task == "binary" and cal is not None and PREDICTION in cols:
        out["estimated"] = {k: round_nan(v) for k, v in estimate(cal, cols[PREDICTION].values).items()}
    return out


def round_nan(v: float) -> float:
    return v if v != v else round(v, 5)


# ---- the judging process ------------------------------------------------------------------------------

_PROFILES: dict[str, tuple[str, Profile]] = {}  # model -> (key, profile), in the judging process


class NeedProfile(Exception):
    """The judging process does not hold this model's profile (new process, or a new profile)."""


def judge_there(
    model: str, key: str, profile: Profile | None, spec: MonitorSpec, s: Sample
) -> dict[str, Any]:
    """Runs in the judging process."""
    if profile is not None:
        _PROFILES[model] = (key, profile)
    held = _PROFILES.get(model)
    if held is None or held[0] != key:
        raise NeedProfile(model)
    return report(held[1], spec, s)


def profile_key(profile: Profile) -> str:
    return f"{id(profile)}:{profile.created_at}:{profile.rows}"


def ready() -> int:
    """The judging process's first call: unpickling it imports this module, and it imports scipy's
    statistics (which the judging functions import where they use them), so both are loaded at start (a
    second or two of CPU), not when the first window closes in the middle of traffic."""
    import scipy.special
    import scipy.stats  # noqa: F401

    return os.getpid()


class Judges:
    """The judging process of a portfolio's monitors, started with the portfolio (its imports take a second
    or two of CPU: paid at start, not in the middle of traffic when the first window closes)."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.judged_there = 0  # windows judged in the judging process
        self.judged_here = 0  # windows judged in a thread, the process having failed

    async def report(self, model: str, profile: Profile, spec: MonitorSpec, s: Sample) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        key = profile_key(profile)
        try:
            pool = self.start()
            try:
                out = await loop.run_in_executor(pool, judge_there, model, key, None, spec, s)
            except NeedProfile:
                out = await loop.run_in_executor(pool, judge_there, model, key, profile, spec, s)
            self.judged_there += 1
            return out
        except Exception as err:  # the process could not start, or died: this window in a thread
            log.warning(json.dumps({"event": "monitor_judge_process_failed", "model": model,
                                    "error": f"{type(err).__name__}: {err}"[:300]}))  # fmt: skip
            self.close()
            self.judged_here += 1
            return await asyncio.to_thread(report, profile, spec, s)

    def pids(self) -> list[int]:
        """The judging process's pid (none before the first window)."""
        return list(self._pool._processes) if self._pool is not None else []

    def start(self) -> concurrent.futures.ProcessPoolExecutor:
        """The judging process, started now if it is not running (a process starts on its first call)."""
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
            self._pool.submit(ready)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
