"""The vocabulary of failsoft: reasons, health, tier kinds and the Outcome of a prediction."""

from __future__ import annotations

import enum
from typing import Any

import msgspec

__all__ = ["Health", "Outcome", "Reason", "Skip", "TierKind"]


class Reason(enum.StrEnum):
    """Why a tier was skipped (and so why an answer is degraded)."""

    TIMEOUT = "timeout"
    ERROR = "error"
    CIRCUIT_OPEN = "circuit_open"
    OVERLOADED = "overloaded"
    INVALID_INPUT = "invalid_input"
    INVALID_OUTPUT = "invalid_output"
    QUARANTINED = "quarantined"
    STALE_FEATURES = "stale_features"
    # the backend refused the request as wrong for it (a 4xx): a configuration fault, not a flaky backend
    REJECTED = "rejected"
    # the tier's model is not loaded yet (loading on first use, or unloaded for the memory budget)
    LOADING = "loading"
    # why a client (Python's failsoft.Client, the PHP client) answered itself: the gateway could not be
    # reached, answered 5xx, or answered something that is not a failsoft answer (and "timeout" above)
    UNREACHABLE = "unreachable"
    GATEWAY_ERROR = "gateway_error"
    BAD_ANSWER = "bad_answer"


class Health(enum.StrEnum):
    LIVE = "live"
    WARNING = "warning"
    QUARANTINED = "quarantined"
    AUDIT = "audit"


class TierKind(enum.StrEnum):
    PYTHON = "python"
    OIP = "oip"
    HTTP = "http"
    SAGEMAKER = "sagemaker"
    DEFAULT = "default"


class Skip(msgspec.Struct, frozen=True, array_like=True):
    """One tier passed over on the way down a chain."""

    tier: str
    reason: Reason
    detail: str = ""


class Outcome(msgspec.Struct, frozen=True):
    """The answer to one prediction and its provenance.

    ``degraded`` is true when the answer did not come from the chain's first tier; ``reason`` is then the
    reason the first tier was skipped, and ``skips`` lists every tier passed over.
    """

    id: str
    model: str
    version: str
    tier: str
    degraded: bool
    reason: Reason | None
    outputs: Any
    latency_ms: float
    skips: tuple[Skip, ...] = ()
    # What in the request was not used, e.g. ["unknown input 'tenure' (did you mean 'tenure_months'?)"];
    # left out of the JSON answer when there is nothing to say.
    warnings: tuple[str, ...] | msgspec.UnsetType = msgspec.UNSET
    # the trace this answer belongs to, while traces are on (failsoft/tracing.py); else left out
    trace_id: str | msgspec.UnsetType = msgspec.UNSET
