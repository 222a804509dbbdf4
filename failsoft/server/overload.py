"""Overload that sheds the right connections (the way Envoy's overload manager does).

A process has a fixed number of file descriptors. Past them the kernel's accept fails, and every client is
shut out alike, the healthy with the slow. So:

- the connection cap is taken from the descriptor limit, with a reserve for the log, the store, the tiers'
  connections and the probes (``effective_cap``): an accept always has a descriptor;
- as connections near the cap, the header, body and keep-alive timeouts shrink (``timeout_scale``): from
  75% of the cap they fall linearly to a tenth at the cap, so slow senders are cut sooner;
- at the cap, a new connection is taken in and the connection making the least progress is closed for it
  (``least_progress``): one refused and lingering, else the one with the most seconds per byte received in
  its current state (an idle keep-alive connection counts as one byte). A connection whose answer is being
  made is never chosen. A healthy client, which sends its request at once, can always connect.
"""

from __future__ import annotations

import json
import logging
import resource
from collections.abc import Iterable
from typing import Any, Protocol

log = logging.getLogger("failsoft.server")

# Descriptors kept for files, the store and backends beyond the connections' own.
FD_RESERVE = 64
# The least cap, whatever the limit (a process with fewer descriptors than this serves few clients anyway).
MIN_CAP = 16
PRESSURE_FROM = 0.75  # share of the cap where timeouts start to shrink
LEAST_SCALE = 0.1  # what is left of them at the cap


class Sheddable(Protocol):
    _draining: bool
    _busy: bool
    _since: float

    def progress(self) -> int: ...

    def shed(self) -> None: ...


def effective_cap(max_connections: int) -> int:
    """``[server] max_connections``, or fewer when the process's descriptor limit cannot hold that many
    beside its reserve (said once in the log)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    cap = max(MIN_CAP, soft - FD_RESERVE)
    if cap < max_connections:
        said = {
            "event": "connection_cap",
            "max_connections": max_connections,
            "cap": cap,
            "open_files": soft,
            "why": f"the descriptor limit, less {FD_RESERVE} kept for the log, store, tiers and probes",
            "fix": f"raise the hard limit (ulimit -Hn) to {max_connections + FD_RESERVE} for max_connections",
        }
        log.warning(json.dumps(said))
        return cap
    return max_connections


def timeout_scale(connections: int, cap: int) -> float:
    """The share of the header, body and keep-alive timeouts that applies with ``connections`` open."""
    share = connections / cap
    if share <= PRESSURE_FROM:
        return 1.0
    return max(LEAST_SCALE, 1.0 - (share - PRESSURE_FROM) / (1.0 - PRESSURE_FROM) * (1.0 - LEAST_SCALE))


def least_progress(connections: Iterable[Any], now: float) -> Sheddable | None:
    """The connection to close for a new one: a refused one still lingering, else the one with the most
    seconds per byte in its current state; never one whose answer is being made."""
    worst: Sheddable | None = None
    worst_score = -1.0
    for conn in connections:
        if conn._draining:
            return conn  # type: ignore[no-any-return]
        if conn._busy:
            continue
        score = (now - conn._since) / max(1, conn.progress())
        if score > worst_score:
            worst, worst_score = conn, score
    return worst
