"""failsoft: the safety layer in front of production ML models.

Every prediction is answered within its deadline, from the best healthy tier, else a cheaper one, else a
safe default, and every answer says which tier gave it and why.
"""

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
