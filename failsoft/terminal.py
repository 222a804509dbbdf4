"""How the command line says things: one console, times and durations written one way.

Times are ISO-8601 in the local zone with its offset (``2026-12-02T10:45:12+01:00``); durations use the
grammar of failsoft/durations.py (``2h 5m``). Piped output is as wide as a report needs, so tables wrap
their cells rather than cut their headers short.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

__all__ = ["console", "stamp"]

PIPED_WIDTH = 200


def console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=PIPED_WIDTH)


def stamp(t: float | None) -> str:
    """An epoch as local ISO-8601 time with its offset; ``-`` for none."""
    if not t:
        return "-"
    return datetime.datetime.fromtimestamp(float(t)).astimezone().isoformat(timespec="seconds")
