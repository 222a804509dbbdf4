"""How the command line says things: one console, times and durations written one way.

Times are ISO-8601 in the local zone with its offset (``2026-12-02T10:45:12+01:00``); durations use the
grammar of failsoft/durations.py (``2h 5m``). Piped output is as wide as a report needs, so tables wrap
their cells rather than cut their headers short. Long offline commands show a progress line on a
terminal (``working`` and ``step``), and nothing when piped or quiet.
"""

from __future__ import annotations

import contextlib
import datetime
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["console", "stamp", "step", "working"]

PIPED_WIDTH = 200


def console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def stamp(t: float | None) -> str:
    """An epoch as local ISO-8601 time with its offset; ``-`` for none."""
    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="seconds")


# The running command's progress line, while one shows: (progress, task, what).
_current: list[Any] = []


@contextlib.contextmanager
def working(what: str, quiet: bool = False) -> Iterator[None]:
    """A progress line on standard error while a long offline command runs (a spinner, what it is doing
    now, the time so far), gone when it ends; nothing when standard error is not a terminal, or ``quiet``."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        _current[:] = [bar, bar.add_task(what), what]
        try:
            yield
        finally:
            _current.clear()


def step(text: str) -> None:
    """Say what the running command does now (free when no progress line shows)."""
    if _current:
        bar, task, what = _current
        bar.update(task, description=f"{what}: {text}")
