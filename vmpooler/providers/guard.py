"""A circuit breaker around each provider instance, so that a dead backend degrades its pools instead of
tying up the provider process (reference §4.11).

``CircuitBreaker`` is the state machine: *closed* (calls go through; ``failure_threshold`` failures in a
row open it), *open* (every call is refused at once with ``CircuitOpen`` for ``timeout`` seconds), then
*half-open* (calls go through again; ``half_open_attempts`` successes close it, one failure opens it).
A failure is an error of the backend: ``ProviderTimeout``, ``ProviderUnavailable`` or an unexpected
exception; any other ``ProviderError`` (a clone that failed, no such VM, a configuration error) is the
backend answering, not a failure, and neither counts nor resets the count; nor does a
``ConnectionWaitTimeout`` (no connection came free in this process: contention, not the backend).

``GuardedProvider`` wraps a plugin: every call that reaches the backend goes through the breaker;
bookkeeping calls (``pool_spec``, ``update_pool``, ``start``/``stop``) do not. Its PoolActors see a
refused call as a ``ProviderUnavailable`` like any other, so a pass skips (its inventory fails) and no
VM is judged by it. Every state change is reported to ``on_change`` (metrics, Redis).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import attrs

from vmpooler.errors import ConnectionWaitTimeout, ProviderError, ProviderTimeout, ProviderUnavailable

if TYPE_CHECKING:
    from vmpooler.model import VMInfo
    from vmpooler.providers.base import PoolSpec, Provider

__all__ = ["BreakerSettings", "BreakerState", "CircuitBreaker", "CircuitOpen", "GuardedProvider"]


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    @property
    def gauge(self) -> float:
        """The original's gauge value: 0 closed, 0.5 half-open, 1 open."""
        return {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 0.5, BreakerState.OPEN: 1.0}[self]


class CircuitOpen(ProviderUnavailable):
    """The provider's circuit breaker refused the call: its backend failed too often, just now."""

    metric_label = "circuit_open"


@attrs.frozen(kw_only=True)
class BreakerSettings:
    """``circuit_breaker_*`` (provider entry, else ``:config:``, else these defaults)."""

    enabled: bool = True
    failure_threshold: int = 5
    timeout: float = 30.0  # seconds open before calls are tried again
    half_open_attempts: int = 3


def _is_failure(exc: BaseException) -> bool:
    """The backend failed: it timed out or is unreachable, or the call broke unexpectedly. Any other
    ``ProviderError`` is the backend answering (a clone that failed, no such VM)."""
    if isinstance(exc, CircuitOpen | ConnectionWaitTimeout):
        return False
    if isinstance(exc, ProviderError):
        return isinstance(exc, ProviderTimeout | ProviderUnavailable)
    return isinstance(exc, Exception) and not isinstance(exc, NotImplementedError)


class CircuitBreaker:
    """Thread-safe; ``clock`` is monotonic seconds (tests pass a fake)."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState, int], None] | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    @property
    def failures(self) -> int:
        with self._lock:
            return self._failures

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``func(*args, **kwargs)`` when the breaker lets it through.

        Raises:
            CircuitOpen: the breaker is open (the call was not made).
        """
        if not self._settings.enabled:
            return func(*args, **kwargs)
        self._admit()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            if _is_failure(exc):
                self._failed()
            raise
        self._succeeded()
        return result

    def _admit(self) -> None:
        changed = None
        with self._lock:
            if self._state is BreakerState.OPEN:
                left = self._opened_at + self._settings.timeout - self._clock()
                if left > 0:
                    failures = f"{self._failures} failures"
                    raise CircuitOpen(
                        f"Circuit breaker '{self.name}' is open ({failures}, retry in {left:.1f}s)"
                    )
                self._state, self._successes = BreakerState.HALF_OPEN, 0
                changed = self._state, self._failures
        self._report(changed)

    def _failed(self) -> None:
        changed = None
        with self._lock:
            self._failures += 1
            opening = self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._failures >= self._settings.failure_threshold
            )
            if opening:
                self._state, self._opened_at = BreakerState.OPEN, self._clock()
                changed = self._state, self._failures
            elif self._state is BreakerState.OPEN:  # a call admitted before it opened: the clock restarts
                self._opened_at = self._clock()
        self._report(changed)

    def _succeeded(self) -> None:
        changed = None
        with self._lock:
            if self._state is BreakerState.HALF_OPEN:
                self._successes += 1
                if self._successes >= self._settings.half_open_attempts:
                    self._state, self._failures = BreakerState.CLOSED, 0
                    changed = self._state, 0
            elif self._state is BreakerState.CLOSED:
                self._failures = 0
        self._report(changed)

    def _report(self, changed: tuple[BreakerState, int] | None) -> None:
        if changed is not None and self._on_change is not None:
            self._on_change(*changed)


class GuardedProvider:
    """A provider whose backend calls go through ``breaker`` (see the module docstring).

    It offers the calls the actors make; anything else is the plugin's own attribute.
    """

    def __init__(self, provider: Provider, breaker: CircuitBreaker) -> None:
        self.inner = provider
        self.breaker = breaker

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # -- bookkeeping: never refused -----------------------------------------------------------------

    def pool_spec(self, pool: str) -> PoolSpec:
        return self.inner.pool_spec(pool)

    def update_pool(self, spec: PoolSpec) -> None:
        self.inner.update_pool(spec)

    # -- the backend ----------------------------------------------------------------------------------

    def list_vms(self, pool: str) -> list[VMInfo]:
        return self.breaker.call(self.inner.list_vms, pool)

    def get_vm(self, pool: str, name: str) -> VMInfo | None:
        return self.breaker.call(self.inner.get_vm, pool, name)

    def create_vm(self, pool: str, name: str) -> VMInfo:
        return self.breaker.call(self.inner.create_vm, pool, name)

    def vm_ready(self, pool: str, name: str) -> bool:
        return bool(self.breaker.call(self.inner.vm_ready, pool, name))

    def destroy_vm(self, pool: str, name: str) -> None:
        self.breaker.call(self.inner.destroy_vm, pool, name)

    def create_disk(self, pool: str, name: str, size_gb: int) -> None:
        self.breaker.call(self.inner.create_disk, pool, name, size_gb)

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        self.breaker.call(self.inner.create_snapshot, pool, name, snapshot)

    def revert_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        self.breaker.call(self.inner.revert_snapshot, pool, name, snapshot)

    def migrate_vm(self, pool: str, name: str) -> str | None:
        return self.breaker.call(self.inner.migrate_vm, pool, name)

    def tag_vm_user(self, pool: str, name: str, user: str) -> bool:
        return bool(self.breaker.call(self.inner.tag_vm_user, pool, name, user))

    def prepare_template(self, pool: str) -> None:
        self.breaker.call(self.inner.prepare_template, pool)

    def purge_unconfigured(self, allowlist: Collection[str]) -> list[str]:
        return self.breaker.call(self.inner.purge_unconfigured, allowlist)
