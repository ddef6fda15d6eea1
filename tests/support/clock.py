"""A clock the test moves by hand, for code that takes a ``clock`` (and a provider's ``wait``)."""

from __future__ import annotations

__all__ = ["FakeClock"]


class FakeClock:
    """Seconds that pass only when the test says so.

    Call it for the time (``now``; set or add to ``now`` to move it). As a ``DummyProvider``'s ``wait`` it
    records each simulated wait in ``waits`` and moves the clock past it at once.

    Args:
        now: the starting time (an epoch by default, so that it formats as a date).
    """

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        """Spend ``seconds`` at once; False: never cut short by a stop."""
        self.waits.append(seconds)
        self.now += seconds
        return False
