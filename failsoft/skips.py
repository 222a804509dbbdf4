"""Skips said in the log: one structured line per skip, folded to at most one line a second per (model,
tier, reason), with the trace's id while traces are on."""

from __future__ import annotations

import json
import logging
import time

from failsoft import tracing
from failsoft.resilience import Clock
from failsoft.types import Reason

log = logging.getLogger("failsoft.chain")


class SkipLog:
    """One structured line per skip, folded to at most one line a second per (model, tier, reason)."""

    def __init__(self, clock: Clock = time.monotonic, interval_s: float = 1.0) -> None:
        self._clock = clock
        self._interval = interval_s
        self._last: dict[tuple[str, str, str], list[float]] = {}

    def skip(self, model: str, tier: str, reason: Reason, request_id: str, detail: str) -> None:
        key = (model, tier, reason)
        now = self._clock()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self._interval:
            entry[1] += 1
            return
        folded = int(entry[1]) if entry else 0
        self._last[key] = [now, 0]
        # a rejection is a configuration fault a person must fix: said louder than a passing failure
        level = logging.WARNING if reason is Reason.REJECTED else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                json.dumps(
                    {
                        "event": "tier_skipped",
                        "model": model,
                        "tier": tier,
                        "reason": str(reason),
                        "request_id": request_id,
                        "detail": detail[:300],
                        "folded": folded,
                    }
                    | ({} if tracing.TRACER is None else {"trace_id": tracing.trace_id()})
                ),
            )
