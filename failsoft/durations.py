"""Durations as people write them, and as failsoft writes them back: one grammar for every command.

Read: ``90`` or ``90s``, ``30m``, ``6h``, ``30d``, ``1w``, also spelt out (``6 hours``, ``30days``,
``2 weeks``) and decimals (``1.5h``). Written: ``2h 5m``, ``30d``, ``45s``, ``250ms``.
"""

from __future__ import annotations

import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}  # fmt: skip
_FORM = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$")
GRAMMAR = "a number of seconds, or a span such as 90s, 30m, 6h, 30d, 1w (also '6 hours')"


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError says what is accepted."""
    m = _FORM.match(text.lower())
    if not m or m.group(2) not in {"", *_UNITS}:
        raise ValueError(f"{text!r} is not a duration: use {GRAMMAR}")
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


def format_duration(seconds: float) -> str:
    """``2h 5m``, ``30d``, ``45s``, ``2.5s``, ``250ms``: the two largest units, no more."""
    s = abs(float(seconds))
    sign = "-" if seconds < 0 else ""
    if s < 1:
        return f"{sign}{s * 1000:.3g}ms"
    if s < 10:
        return f"{sign}{s:.1f}s".replace(".0s", "s")
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            n = int(s // size)
            s -= n * size
            parts.append(f"{n}{unit}")
        if len(parts) == 2:
            break
    return sign + " ".join(parts)
