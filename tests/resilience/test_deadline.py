from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failsoft.resilience import Bulkhead, Deadline


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@given(
    budget=st.floats(0.001, 10), timeout=st.floats(0.0001, 10), steps=st.lists(st.floats(0, 2), max_size=20)
)
def test_bound_never_exceeds_timeout_or_what_is_left(
    budget: float, timeout: float, steps: list[float]
) -> None:
    clock = Clock()
    d = Deadline(budget, clock)
    for dt in steps:
        clock.now += dt
        left = budget - (clock.now - 50.0)
        b = d.bound(timeout)
        assert 0.0 <= b <= timeout
        assert b <= max(left, 0.0) + 1e-12
        assert d.remaining() == pytest.approx(max(left, 0.0), abs=1e-9)
        assert d.expired() == (left <= 1e-12) or abs(left) < 1e-9


def test_expires_exactly_at_budget() -> None:
    clock = Clock()
    d = Deadline(0.05, clock)
    clock.now += 0.049
    assert not d.expired()
    clock.now += 0.001
    assert d.expired() and d.bound(1.0) == 0.0 and d.remaining() == 0.0


def test_bulkhead_refuses_at_limit_without_queueing() -> None:
    b = Bulkhead(2)
    assert b.try_acquire() and b.try_acquire()
    assert not b.try_acquire()
    assert b.rejected == 1
    b.release()
    assert b.try_acquire()
    b.release()
    b.release()
    with pytest.raises(RuntimeError):
        b.release()


def test_bulkhead_needs_positive_limit() -> None:
    with pytest.raises(ValueError):
        Bulkhead(0)
