"""A deadline budget: what is left of a request's time, read from an injected monotonic clock."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]


class Deadline:
    """Expires ``budget_s`` seconds after it is made.

    >>> d = Deadline(0.05, clock=lambda: 10.0)
    >>> d.bound(1.0)
    0.05
    """

    __slots__ = ("_clock", "expires_at", "started_at")

    def __init__(self, budget_s: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.started_at = clock()
        self.expires_at = self.started_at + budget_s

    def remaining(self) -> float:
        """Seconds left, never negative."""
        left = self.expires_at - self._clock()
        return left if left > 0.0 else 0.0

    def expired(self) -> bool:
        return self._clock() >= self.expires_at

    def bound(self, timeout_s: float) -> float:
        """The time one call may take: the smaller of its own timeout and what is left."""
        left = self.expires_at - self._clock()
        if left <= 0.0:
            return 0.0
        return timeout_s if timeout_s < left else left

    def elapsed(self) -> float:
        return self._clock() - self.started_at
