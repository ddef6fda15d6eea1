"""How long a provider call waits for a free backend connection: an adaptive timeout (reference §4.11).

``AdaptiveTimeout`` keeps the last 100 waits for a connection. Once it has 10, the timeout becomes
``round(p95 × 1.5)`` bounded by ``connection_pool_timeout_min``/``_max``, but only when that moved it by
more than 5 s (no flapping); every wait that timed out cuts it by 20 % (not below the minimum), so a
backend that stopped answering makes callers give up sooner. It starts at
``connection_pool_timeout_initial``.

``ConnectionSlots`` is a provider's bounded set of connections (the dummy's simulated ones, the vSphere
session pool's): a caller takes a slot for the duration of its call, waiting at most the adaptive
timeout (the provider's own ``connection_pool_timeout`` when adaptive timeouts are off), and the slots
count who holds one and who waits for the connection pool monitor (``vmpooler.providers.monitor``).

The core builds one ``AdaptiveTimeout`` per provider process from the provider entry's settings
(``vmpooler.config.pools.ProviderConfig.adaptive``) and hands it to the plugin through
``Provider.use_adaptive_timeout``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator

import attrs

from vmpooler.errors import ConnectionWaitTimeout
from vmpooler.providers.base import ConnectionStats

__all__ = ["AdaptiveSettings", "AdaptiveTimeout", "ConnectionSlots", "MonitorSettings", "TimeoutStats"]

log = logging.getLogger(__name__)

_SAMPLES = 100  # waits kept
_MIN_SAMPLES = 10  # waits needed before the timeout follows them
_HEADROOM = 1.5  # the timeout is the p95 wait times this
_HYSTERESIS = 5.0  # seconds the timeout must move by to change
_FAILURE_CUT = 0.8  # each timed-out wait multiplies the timeout by this


@attrs.frozen(kw_only=True)
class AdaptiveSettings:
    """``adaptive_timeout_enabled`` and ``connection_pool_timeout_min``/``_max``/``_initial`` (seconds):
    the provider entry's, else ``:config:``'s, else these defaults."""

    enabled: bool = True
    minimum: float = 5.0
    maximum: float = 60.0
    initial: float = 30.0


@attrs.frozen(kw_only=True)
class MonitorSettings:
    """``connection_pool_monitor_enabled`` and ``connection_pool_monitor_interval`` (seconds): the
    provider entry's, else ``:config:``'s, else these defaults."""

    enabled: bool = True
    interval: float = 10.0


@attrs.frozen(kw_only=True)
class TimeoutStats:
    """What the adaptive timeout knows, for the metrics. The durations are None without samples."""

    samples: int
    current: float
    average: float | None = None
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    longest: float | None = None


def _round(value: float) -> int:
    """Half away from zero, as the original's ``Float#round`` (Python's ``round`` rounds half to even)."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def _percentile(ordered: list[float], fraction: float) -> float:
    """The original's nearest-rank percentile of an ascending, non-empty list."""
    index = min(max(math.ceil(len(ordered) * fraction) - 1, 0), len(ordered) - 1)
    return ordered[index]


class AdaptiveTimeout:
    """The timeout of one provider's connection waits. Thread-safe.

    Args:
        name: the provider instance (for log lines).
        settings: the bounds and the starting value; a minimum above the maximum wins over it.
        samples: how many recent waits to keep.
        clock: monotonic seconds, to time the waits of :meth:`wait` (tests pass a fake).
    """

    def __init__(
        self,
        name: str,
        settings: AdaptiveSettings | None = None,
        *,
        samples: int = _SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        settings = settings or AdaptiveSettings()
        self.name = name
        self.minimum = settings.minimum
        self.maximum = max(settings.maximum, settings.minimum)
        self._clock = clock
        self._lock = threading.Lock()
        self._durations: collections.deque[float] = collections.deque(maxlen=samples)
        self._current = self._bounded(settings.initial)

    @property
    def current(self) -> float:
        """The timeout to wait with now, in seconds."""
        with self._lock:
            return self._current

    def wait(self, acquire: Callable[[float], bool]) -> bool:
        """Call ``acquire(timeout)`` with the current timeout and learn from it: how long it took when
        it returns True, a failure when it returns False (it timed out).

        Returns:
            What ``acquire`` returned.
        """
        timeout = self.current
        started = self._clock()
        if not acquire(timeout):
            self.record_failure()
            return False
        self.record_wait(self._clock() - started)
        return True

    def record_wait(self, seconds: float) -> None:
        """One wait that ended with a connection, ``seconds`` long (0 when one was free at once)."""
        with self._lock:
            self._durations.append(max(seconds, 0.0))
            if len(self._durations) < _MIN_SAMPLES:
                return
            p95 = _percentile(sorted(self._durations), 0.95)
            wanted = self._bounded(_round(p95 * _HEADROOM))
            old = self._current
            if abs(wanted - old) <= _HYSTERESIS:
                return
            self._current = wanted
        log.info("adaptive timeout of %s: %gs -> %gs (p95 wait %.2fs)", self.name, old, wanted, p95)

    def record_failure(self) -> None:
        """One wait that timed out: the timeout shrinks by 20 %, not below the minimum."""
        with self._lock:
            old = self._current
            self._current = max(_round(old * _FAILURE_CUT), self.minimum)
            new = self._current
        if new != old:
            log.info("adaptive timeout of %s: %gs -> %gs after a wait timed out", self.name, old, new)

    def stats(self) -> TimeoutStats:
        """The current timeout and the recent waits' figures (rounded to 0.01 s)."""
        with self._lock:
            ordered = sorted(self._durations)
            current = self._current
        if not ordered:
            return TimeoutStats(samples=0, current=current)
        return TimeoutStats(
            samples=len(ordered),
            current=current,
            average=round(sum(ordered) / len(ordered), 2),
            p50=round(_percentile(ordered, 0.50), 2),
            p95=round(_percentile(ordered, 0.95), 2),
            p99=round(_percentile(ordered, 0.99), 2),
            longest=round(ordered[-1], 2),
        )

    def _bounded(self, seconds: float) -> float:
        return min(max(seconds, self.minimum), self.maximum)


class ConnectionSlots:
    """``size`` connections, each lent to one caller at a time. Thread-safe.

    A caller waits for a free one at most ``adaptive.current`` seconds when ``adaptive`` is set (the
    provider's ``use_adaptive_timeout``), else ``timeout``; then :meth:`acquire` raises
    ``ConnectionWaitTimeout`` (a ``ProviderTimeout``) with the message ``"<what> after <t>s (all <size> in
    use)"``.

    Args:
        size: how many connections there are (>= 1).
        timeout: seconds to wait without an adaptive timeout.
        what: the start of the timeout message, e.g. ``"vCenter host:443: no free session"``.
    """

    def __init__(self, size: int, timeout: float, *, what: str) -> None:
        self.size = size
        self.timeout = timeout
        self.adaptive: AdaptiveTimeout | None = None
        self._what = what
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._in_use = 0
        self._waiting = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One connection for the duration of a ``with`` block.

        Raises:
            ConnectionWaitTimeout: none came free in time.
        """
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        """Take a connection; give it back with :meth:`release`.

        Raises:
            ConnectionWaitTimeout: none came free in time.
        """
        adaptive = self.adaptive
        waited = self.timeout

        def take(timeout: float) -> bool:
            nonlocal waited
            waited = timeout
            return self._take(timeout)

        if not (adaptive.wait(take) if adaptive is not None else take(self.timeout)):
            raise ConnectionWaitTimeout(f"{self._what} after {waited:g}s (all {self.size} in use)")
        with self._lock:
            self._in_use += 1

    def release(self) -> None:
        with self._lock:
            self._in_use -= 1
        self._slots.release()

    def stats(self) -> ConnectionStats:
        with self._lock:
            return ConnectionStats(size=self.size, in_use=self._in_use, waiting=self._waiting)

    def _take(self, timeout: float) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        with self._lock:
            self._waiting += 1
        try:
            return self._slots.acquire(timeout=timeout)
        finally:
            with self._lock:
                self._waiting -= 1
