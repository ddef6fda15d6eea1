"""``providers.guard.CircuitBreaker``: closed → open → half-open → closed, on a fake clock."""

from __future__ import annotations

import pytest

from tests.support.clock import FakeClock
from vmpooler.errors import CloneFailed, ConnectionWaitTimeout, ProviderError, ProviderTimeout, VMNotFound
from vmpooler.providers.guard import BreakerSettings, BreakerState, CircuitBreaker, CircuitOpen


def failing(exc: BaseException):
    def call() -> None:
        raise exc

    return call


def ok() -> str:
    return "ok"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(clock: FakeClock, **settings: float) -> tuple[CircuitBreaker, list[tuple[BreakerState, int]]]:
    changes: list[tuple[BreakerState, int]] = []
    breaker = CircuitBreaker(
        "p", BreakerSettings(**settings), clock=clock, on_change=lambda s, n: changes.append((s, n))
    )
    return breaker, changes


def test_it_opens_after_the_threshold_of_failures_in_a_row_and_refuses_calls(clock):
    breaker, changes = make(clock, failure_threshold=3, timeout=30)
    for _ in range(2):
        with pytest.raises(ProviderTimeout):
            breaker.call(failing(ProviderTimeout("slow")))
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(ProviderTimeout):
        breaker.call(failing(ProviderTimeout("slow")))
    assert breaker.state is BreakerState.OPEN and changes == [(BreakerState.OPEN, 3)]
    calls = []
    with pytest.raises(CircuitOpen, match=r"Circuit breaker 'p' is open \(3 failures, retry in 30.0s\)"):
        breaker.call(lambda: calls.append(1))
    assert calls == []  # refused without calling


def test_a_success_resets_the_count_while_closed(clock):
    breaker, _ = make(clock, failure_threshold=2)
    with pytest.raises(ProviderTimeout):
        breaker.call(failing(ProviderTimeout("slow")))
    assert breaker.call(ok) == "ok"
    with pytest.raises(ProviderTimeout):
        breaker.call(failing(ProviderTimeout("slow")))
    assert breaker.state is BreakerState.CLOSED


def test_answers_are_not_failures(clock):
    breaker, _ = make(clock, failure_threshold=1)
    with pytest.raises(VMNotFound):
        breaker.call(failing(VMNotFound("no such vm")))
    with pytest.raises(CloneFailed):
        breaker.call(failing(CloneFailed("template missing", transient=False)))
    with pytest.raises(CloneFailed):
        breaker.call(failing(CloneFailed("the clone failed, try again")))
    with pytest.raises(ProviderError):
        breaker.call(failing(ProviderError("the backend said no")))
    with pytest.raises(ConnectionWaitTimeout):  # contention in this process, not the backend
        breaker.call(failing(ConnectionWaitTimeout("no free connection after 5s")))
    with pytest.raises(NotImplementedError):
        breaker.call(failing(NotImplementedError()))
    assert breaker.state is BreakerState.CLOSED
    with pytest.raises(RuntimeError):  # an unexpected error is a failure
        breaker.call(failing(RuntimeError("boom")))
    assert breaker.state is BreakerState.OPEN


def test_after_the_timeout_it_half_opens_and_closes_after_enough_successes(clock):
    breaker, changes = make(clock, failure_threshold=1, timeout=30, half_open_attempts=3)
    with pytest.raises(ProviderTimeout):
        breaker.call(failing(ProviderTimeout("slow")))
    clock.now += 29.9
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    clock.now += 0.1
    assert breaker.call(ok) == "ok"
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.call(ok)
    breaker.call(ok)
    assert breaker.state is BreakerState.CLOSED
    assert changes == [(BreakerState.OPEN, 1), (BreakerState.HALF_OPEN, 1), (BreakerState.CLOSED, 0)]


def test_a_failure_while_half_open_opens_it_again_for_a_full_timeout(clock):
    breaker, changes = make(clock, failure_threshold=1, timeout=10)
    with pytest.raises(ProviderTimeout):
        breaker.call(failing(ProviderTimeout("slow")))
    clock.now += 10
    breaker.call(ok)
    with pytest.raises(ProviderTimeout):
        breaker.call(failing(ProviderTimeout("slow")))
    assert breaker.state is BreakerState.OPEN
    clock.now += 9
    with pytest.raises(CircuitOpen):
        breaker.call(ok)
    assert [state for state, _ in changes] == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.OPEN]


def test_disabled_it_never_refuses(clock):
    breaker, changes = make(clock, enabled=False, failure_threshold=1)
    for _ in range(5):
        with pytest.raises(ProviderTimeout):
            breaker.call(failing(ProviderTimeout("slow")))
    assert breaker.call(ok) == "ok" and changes == []
