"""failsoft: the safety layer in front of production ML models.

Every prediction is answered within its deadline, from the best healthy tier, else a cheaper one, else a
safe default, and every answer says which tier gave it and why.

Importing ``failsoft`` loads nothing heavy: each name below is imported when first used, so a process
that needs one corner (the log writer, a worker's supervisor) does not pay for the portfolio, scipy and
the tiers (about 1.3 s of imports, and more on a loaded machine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from failsoft.client import Client, NoDefault
    from failsoft.config import PortfolioSpec
    from failsoft.errors import (
        CircuitOpen,
        ConfigError,
        FailsoftError,
        InvalidOutput,
        InvalidRequest,
        TierError,
        TierTimeout,
        TierUnavailable,
        UnknownModel,
    )
    from failsoft.portfolio import Portfolio
    from failsoft.resilience import Breaker, BreakerPolicy, BreakerState, Bulkhead, Deadline
    from failsoft.types import Health, Outcome, Reason, Skip, TierKind

__all__ = [
    "Breaker",
    "BreakerPolicy",
    "BreakerState",
    "Bulkhead",
    "CircuitOpen",
    "Client",
    "ConfigError",
    "Deadline",
    "FailsoftError",
    "Health",
    "InvalidOutput",
    "InvalidRequest",
    "NoDefault",
    "Outcome",
    "Portfolio",
    "PortfolioSpec",
    "Reason",
    "Skip",
    "TierError",
    "TierKind",
    "TierTimeout",
    "TierUnavailable",
    "UnknownModel",
]

_HOMES = {
    "Client": "failsoft.client",
    "NoDefault": "failsoft.client",
    "PortfolioSpec": "failsoft.config",
    "Portfolio": "failsoft.portfolio",
    **dict.fromkeys(
        (
            "CircuitOpen",
            "ConfigError",
            "FailsoftError",
            "InvalidOutput",
            "InvalidRequest",
            "TierError",
            "TierTimeout",
            "TierUnavailable",
            "UnknownModel",
        ),
        "failsoft.errors",
    ),
    **dict.fromkeys(
        ("Breaker", "BreakerPolicy", "BreakerState", "Bulkhead", "Deadline"), "failsoft.resilience"
    ),
    **dict.fromkeys(("Health", "Outcome", "Reason", "Skip", "TierKind"), "failsoft.types"),
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'failsoft' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
