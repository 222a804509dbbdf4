"""Circuit breakers, deadline budgets and bulkheads: pure state, no I/O, injected clocks."""

from failsoft.resilience.breaker import Breaker, BreakerPolicy, BreakerState
from failsoft.resilience.bulkhead import Bulkhead
from failsoft.resilience.deadline import Clock, Deadline

__all__ = ["Breaker", "BreakerPolicy", "BreakerState", "Bulkhead", "Clock", "Deadline"]
