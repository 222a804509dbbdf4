"""What the portfolio hangs on its chains' answers besides the monitor and the mirror: the prediction
log's record of each answer."""

from __future__ import annotations

import time

from failsoft.chain import Answer, Listener
from failsoft.store import PredictionRow
from failsoft.store.records import RecordQueue

__all__ = ["logged"]


def logged(records: RecordQueue) -> Listener:
    """The prediction log as a listener: one record per answer, queued for the writer."""
    append, keep_inputs, now = records.append, records.log_inputs, time.time

    def log_answer(a: Answer) -> None:
        o = a.outcome
        inputs = a.rows if keep_inputs else None
        append(PredictionRow(None, o.id, o.model, o.version, o.tier, "live", o.degraded, o.reason, a.outputs,
                             inputs, o.latency_ms, now()))  # fmt: skip

    return log_answer
