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

if TYPE_CHECKING:  # for type checkers: the same names as _HOMES (tests/test_public.py holds them equal)
    from failsoft.client import Client as Client
    from failsoft.client import NoDefault as NoDefault
    from failsoft.config import PortfolioSpec as PortfolioSpec
    from failsoft.errors import CircuitOpen as CircuitOpen
    from failsoft.errors import ConfigError as ConfigError
    from failsoft.errors import FailsoftError as FailsoftError
    from failsoft.errors import InvalidOutput as InvalidOutput
    from failsoft.errors import InvalidRequest as InvalidRequest
    from failsoft.errors import TierError as TierError
    from failsoft.errors import TierTimeout as TierTimeout
    from failsoft.errors import TierUnavailable as TierUnavailable
    from failsoft.errors import UnknownModel as UnknownModel
    from failsoft.portfolio import Portfolio as Portfolio
    from failsoft.resilience import Breaker as Breaker
    from failsoft.resilience import BreakerPolicy as BreakerPolicy
    from failsoft.resilience import BreakerState as BreakerState
    from failsoft.resilience import Bulkhead as Bulkhead
    from failsoft.resilience import Deadline as Deadline
    from failsoft.types import Health as Health
    from failsoft.types import Outcome as Outcome
    from failsoft.types import Reason as Reason
    from failsoft.types import Skip as Skip
    from failsoft.types import TierKind as TierKind

# The public names, each with the module it is imported from when first used: the one list (``__all__``
# is made from it).
_HOMES = {
    "failsoft.client": ("Client", "NoDefault"),
    "failsoft.config": ("PortfolioSpec",),
    "failsoft.errors": ("CircuitOpen", "ConfigError", "FailsoftError", "InvalidOutput", "InvalidRequest",
                        "TierError", "TierTimeout", "TierUnavailable", "UnknownModel"),
    "failsoft.portfolio": ("Portfolio",),
    "failsoft.resilience": ("Breaker", "BreakerPolicy", "BreakerState", "Bulkhead", "Deadline"),
    "failsoft.types": ("Health", "Outcome", "Reason", "Skip", "TierKind"),
}  # fmt: skip
_HOME = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'failsoft' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
