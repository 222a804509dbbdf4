from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from failsoft.resilience import Breaker, BreakerPolicy, BreakerState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw: float) -> tuple[Breaker, FakeClock]:
    clock = FakeClock()
    policy = BreakerPolicy(**{"window": 10, "min_calls": 4, "failure_rate": 0.5, "open_s": 2.0, **kw})  # type: ignore[arg-type]
    return Breaker(policy, clock), clock


def call(b: Breaker, ok: bool) -> bool:
    ticket = b.acquire()
    if ticket is None:
        return False
    b.record(ticket, ok)
    return True


def test_opens_at_failure_rate_after_min_calls() -> None:
    b, _ = make()
    for _ in range(3):
        call(b, False)
    assert b.state is BreakerState.CLOSED, "fewer than min_calls: stays closed"
    call(b, False)
    assert b.state is BreakerState.OPEN
    assert b.acquire() is None


def test_successes_keep_it_closed_below_rate() -> None:
    b, _ = make()
    for i in range(40):
        call(b, i % 3 != 1)  # a third fail: under 50% in every window
    assert b.state is BreakerState.CLOSED


def test_sliding_window_forgets_old_failures() -> None:
    b, _ = make(window=4, min_calls=4, failure_rate=0.75)
    for ok in [False, False, True, True, True, True, False, False]:
        call(b, ok)
    assert b.state is BreakerState.CLOSED  # last 4: T T F F = 50% < 75%


def test_half_open_after_open_duration_then_closes_on_probe_success() -> None:
    b, clock = make(half_open_probes=2)
    for _ in range(4):
        call(b, False)
    clock.now += 1.999
    assert b.state is BreakerState.OPEN
    assert b.retry_after() == pytest.approx(0.001)
    clock.now += 0.001
    assert b.state is BreakerState.HALF_OPEN
    t1, t2 = b.acquire(), b.acquire()
    assert t1 is not None and t2 is not None
    assert b.acquire() is None, "only half_open_probes calls pass at once"
    b.record(t1, True)
    assert b.state is BreakerState.HALF_OPEN
    b.record(t2, True)
    assert b.state is BreakerState.CLOSED


def test_probe_failure_reopens() -> None:
    b, clock = make()
    for _ in range(4):
        call(b, False)
    clock.now += 2.0
    t = b.acquire()
    assert t is not None
    b.record(t, False)
    assert b.state is BreakerState.OPEN
    assert b.times_opened == 2


def test_stale_ticket_is_ignored() -> None:
    b, clock = make()
    stale = b.acquire()
    assert stale is not None
    for _ in range(4):
        call(b, False)
    clock.now += 2.0
    probe = b.acquire()
    assert probe is not None
    b.record(stale, False)  # admitted before the breaker opened: says nothing about now
    assert b.state is BreakerState.HALF_OPEN
    b.record(probe, True)
    assert b.state is BreakerState.CLOSED


def test_cancel_returns_probe_slot() -> None:
    b, clock = make()
    for _ in range(4):
        call(b, False)
    clock.now += 2.0
    t = b.acquire()
    assert t is not None and b.acquire() is None
    b.cancel(t)
    assert b.acquire() is not None


def test_reset_closes() -> None:
    b, _ = make()
    for _ in range(4):
        call(b, False)
    b.reset()
    assert b.state is BreakerState.CLOSED and b.acquire() is not None


@pytest.mark.parametrize(
    "kw", [{"window": 0}, {"min_calls": 11}, {"failure_rate": 0.0}, {"failure_rate": 1.5}, {"open_s": 0}]
)
def test_policy_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        make(**kw)


@settings(max_examples=200)
@given(st.lists(st.booleans(), min_size=1, max_size=200))
def test_never_opens_without_enough_failures(outcomes: list[bool]) -> None:
    b, _ = make(window=10, min_calls=4, failure_rate=0.5)
    window: list[bool] = []
    for ok in outcomes:
        admitted = call(b, ok)
        if not admitted:
            break
        window = [*window, ok][-10:]
        if b.state is BreakerState.OPEN:
            fails = window.count(False)
            assert len(window) >= 4 and fails >= 0.5 * len(window)
            break


class BreakerMachine(RuleBasedStateMachine):
    """Random calls, outcomes and time steps: the breaker's invariants hold throughout."""

    def __init__(self) -> None:
        super().__init__()
        self.breaker, self.clock = make(half_open_probes=2)
        self.tickets: list[int] = []

    @rule()
    def acquire(self) -> None:
        state = self.breaker.state
        t = self.breaker.acquire()
        if state is BreakerState.OPEN:
            assert t is None, "an open breaker admits nothing"
        if state is BreakerState.CLOSED:
            assert t is not None, "a closed breaker admits everything"
        if t is not None:
            self.tickets.append(t)

    @precondition(lambda self: self.tickets)
    @rule(ok=st.booleans(), data=st.data())
    def finish(self, ok: bool, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.tickets) - 1))
        self.breaker.record(self.tickets.pop(i), ok)

    @rule(dt=st.floats(0, 3))
    def advance(self, dt: float) -> None:
        self.clock.now += dt

    @invariant()
    def probes_bounded(self) -> None:
        b = self.breaker
        assert 0 <= b._probes_in_flight <= b.policy.half_open_probes
        assert 0 <= b.failure_share() <= 1

    @invariant()
    def retry_after_bounded(self) -> None:
        assert 0 <= self.breaker.retry_after() <= self.breaker.policy.open_s


BreakerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestBreakerMachine = BreakerMachine.TestCase
