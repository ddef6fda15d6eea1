"""Waiting in tests: one polling loop, with deadlines scaled for loaded machines (nodepool's
``iterate_timeout``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

__all__ = ["TIMEOUT_SCALE", "poll", "wait_for"]

T = TypeVar("T")

# Deadlines in tests are failure bounds, not speed goals: a loaded 2-core CI machine (the chaos test
# runs beside the others) gets more room. Speed goals live in the benchmarks.
TIMEOUT_SCALE = float(os.environ.get("VMPOOLER_TEST_TIMEOUT_SCALE", "3"))


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T | None:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value.

    Args:
        predicate: the condition; called at least once, and once more after the deadline passed.
        timeout: seconds to keep trying, as given (not scaled).
        interval: seconds between calls.

    Returns:
        The predicate's first truthy value, or None when it never returned one in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout`` seconds
    (times ``TIMEOUT_SCALE``)."""
    timeout *= TIMEOUT_SCALE
    value = poll(predicate, timeout)
    if not value:
        pytest.fail(f"timed out after {timeout}s waiting for {what}")
    return value
