"""failsoft: the safety layer in front of production ML models.

Every prediction is answered within its deadline, from the best healthy tier, else a cheaper one, else a
safe default, and every answer says which tier gave it and why.
"""

from typing import TYPE_CHECKING, Any

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
from failsoft.resilience import Breaker, BreakerPolicy, BreakerState, Bulkhead, Deadline
from failsoft.types import Health, Outcome, Reason, Skip, TierKind

if TYPE_CHECKING:
    from failsoft.client import Client, NoDefault
    from failsoft.config import PortfolioSpec
    from failsoft.portfolio import Portfolio

# Imported on first use: the portfolio pulls in scikit-learn and the client httpx, which the prediction
# log's writer process and short commands do not need.
_LAZY = {
    "Client": "failsoft.client",
    "NoDefault": "failsoft.client",
    "PortfolioSpec": "failsoft.config",
    "Portfolio": "failsoft.portfolio",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'failsoft' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
