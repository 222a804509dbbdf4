"""A bulkhead: a concurrency limit that never queues. A full bulkhead refuses at once."""

from __future__ import annotations


class Bulkhead:
    __slots__ = ("in_flight", "limit", "rejected")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"bulkhead limit must be >= 1 (got {limit})")
        self.limit = limit
        self.in_flight = 0
        self.rejected = 0

    def try_acquire(self) -> bool:
        # Single-threaded use from the event loop: no lock needed, and none is ever held across I/O.
        if self.in_flight >= self.limit:
            self.rejected += 1
            return False
        self.in_flight += 1
        return True

    def release(self) -> None:
        if self.in_flight <= 0:
            raise RuntimeError("bulkhead released more often than acquired")
        self.in_flight -= 1
