"""A circuit breaker as a pure state machine over an injected monotonic clock.

CLOSED: calls pass; the outcomes of the last ``window`` calls are kept. Once at least ``min_calls`` are
recorded and the failure share reaches ``failure_rate``, the breaker opens.
OPEN: calls are refused (no network is touched) for ``open_s`` seconds, then the breaker turns HALF_OPEN.
HALF_OPEN: up to ``half_open_probes`` calls pass at once; that many successes close it, one failure
reopens it. Outcomes of calls admitted before the last transition are ignored (they describe the past).
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass

from failsoft.resilience.deadline import Clock


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window: int = 20
    min_calls: int = 10
    failure_rate: float = 0.5
    open_s: float = 5.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_calls < 1 or self.half_open_probes < 1:
            raise ValueError("window, min_calls and half_open_probes must be >= 1")
        if self.min_calls > self.window:
            raise ValueError(f"min_calls ({self.min_calls}) cannot exceed window ({self.window})")
        if not 0.0 < self.failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be in (0, 1] (got {self.failure_rate})")
        if self.open_s <= 0:
            raise ValueError(f"open_s must be > 0 (got {self.open_s})")


class Breaker:
    """Guards one tier. ``acquire()`` returns a ticket (or ``None`` when refused); pass it to ``record``."""

    __slots__ = (
        "_clock",
        "_failures",
        "_generation",
        "_opened_at",
        "_outcomes",
        "_probe_successes",
        "_probes_in_flight",
        "_state",
        "policy",
        "times_opened",
    )

    def __init__(self, policy: BreakerPolicy | None = None, clock: Clock = time.monotonic) -> None:
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._outcomes: deque[bool] = deque(maxlen=self.policy.window)
        self._failures = 0
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._generation = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        self.times_opened = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.policy.open_s:
            self._transition(BreakerState.HALF_OPEN)
        return self._state

    def retry_after(self) -> float:
        """Seconds until the next probe may pass (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        left = self.policy.open_s - (self._clock() - self._opened_at)
        return min(self.policy.open_s, max(0.0, left))

    def failure_share(self) -> float:
        return self._failures / len(self._outcomes) if self._outcomes else 0.0

    def acquire(self) -> int | None:
        state = self._state
        if state is BreakerState.CLOSED:
            return self._generation
        state = self.state  # may move OPEN -> HALF_OPEN
        if state is BreakerState.HALF_OPEN and self._probes_in_flight < self.policy.half_open_probes:
            self._probes_in_flight += 1
            return self._generation
        return None

    def record(self, ticket: int, success: bool) -> None:
        if ticket != self._generation:
            return
        if self._state is BreakerState.HALF_OPEN:
            self._probes_in_flight -= 1
            if not success:
                self._open()
                return
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_probes:
                self._transition(BreakerState.CLOSED)
            return
        if self._state is not BreakerState.CLOSED:
            return
        outcomes = self._outcomes
        if len(outcomes) == outcomes.maxlen and not outcomes[0]:
            self._failures -= 1
        outcomes.append(success)
        if not success:
            self._failures += 1
            if len(outcomes) >= self.policy.min_calls and self._failures >= self.policy.failure_rate * len(
                outcomes
            ):
                self._open()

    def cancel(self, ticket: int) -> None:
        """Give back a ticket whose call never happened (e.g. the bulkhead was full)."""
        if (
            ticket == self._generation
            and self._state is BreakerState.HALF_OPEN
            and self._probes_in_flight > 0
        ):
            self._probes_in_flight -= 1

    def reset(self) -> None:
        """Close the breaker and forget its history (a person restored the tier)."""
        self._transition(BreakerState.CLOSED)

    def _open(self) -> None:
        self._transition(BreakerState.OPEN)
        self._opened_at = self._clock()
        self.times_opened += 1

    def _transition(self, state: BreakerState) -> None:
        self._state = state
        self._generation += 1
        self._probes_in_flight = 0
        self._probe_successes = 0
        self._outcomes.clear()
        self._failures = 0
