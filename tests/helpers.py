"""In-process model callables for tests: they answer, hang, fail or return garbage on command; and
``until``, waiting on a condition."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

CALLS = {"n": 0}
RELEASE = threading.Event()


def score(row: dict[str, Any]) -> float:
    CALLS["n"] += 1
    return min(1.0, row["x"] / 10.0)


def hang(row: dict[str, Any]) -> float:
    RELEASE.wait(5)
    return 0.5


def slow(row: dict[str, Any]) -> float:
    time.sleep(0.05)
    return 0.5


def boom(row: dict[str, Any]) -> float:
    raise RuntimeError("model exploded")


def garbage(row: dict[str, Any]) -> Any:
    return float("nan") if row["x"] > 5 else "not a number"


def batch(rows: list[dict[str, Any]]) -> list[float]:
    return [r["x"] / 100.0 for r in rows]


def score4(row: dict[str, Any]) -> float:
    return 1.0 / (1.0 + sum(abs(v) for v in row.values()))


def spend_score(row: dict[str, Any]) -> float:
    """A model reading a value the online feature store fills in."""
    return min(1.0, row["spend"] / 100.0)


def spin(row: dict[str, Any]) -> float:
    """Stuck in pure Python for good when x > 5 (holds the interpreter lock, unlike a sleep)."""
    if row["x"] > 5:
        while True:
            pass
    return min(1.0, row["x"] / 10.0)


def die(row: dict[str, Any]) -> float:
    """Kills its own process when x > 5 (a segfault in a native model, say)."""
    import os

    if row["x"] > 5:
        os._exit(3)
    return 0.25


FLAKY = {"n": 0}


def flaky(row: dict[str, Any]) -> float:
    """Fails its first call, then answers: a backend that is flaky, not wrong."""
    FLAKY["n"] += 1
    if FLAKY["n"] == 1:
        raise RuntimeError("first call fails")
    return 0.5


async def until(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``check()`` holds, looking every 50 ms; fail after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


def queued(
    queue: Any,
    request_id: Any,
    model: str,
    version: str,
    tier: str,
    role: str,
    degraded: bool,
    reason: str | None,
    outputs: Any,
    inputs: Any,
    latency_ms: float,
) -> None:
    """Queue a record as the serving process does for an answer (its inputs only when the queue keeps
    them), or for a shadow call's answers to several requests (``request_id`` a list)."""
    from failsoft.store.base import PredictionRow

    kept = inputs if queue.log_inputs else None
    queue.append(PredictionRow(None, request_id, model, version, tier, role, degraded, reason, outputs, kept,
                               latency_ms, time.time()))  # type: ignore[arg-type]  # fmt: skip


def recommend(row: dict[str, Any]) -> list[str]:
    """Ten items for a user, the same every time."""
    start = int(row["user_id"]) % 50
    return [f"item-{start + i:03d}" for i in range(10)]


GROWN: list[bytearray] = []


def grow(row: dict[str, Any]) -> float:
    """Keeps 64 MB more at every call and never lets go (a model leaking memory)."""
    GROWN.append(bytearray(64 << 20))
    return 0.5


def nan(row: dict[str, Any]) -> float:
    """Answers NaN (the output check refuses it)."""
    return float("nan")


def unpickled_slowly(seconds: float, blob: bytes) -> Any:
    """What a model file that takes ``seconds`` to load gives (a pickle whose reduce calls this)."""
    time.sleep(seconds)
    return pickle.loads(blob)
