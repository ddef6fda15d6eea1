"""A bounded pool of vCenter sessions: health-checked, re-established transparently, never hammering.

* At most ``size`` sessions exist; a caller waits up to ``timeout`` seconds for one, then gets
  ``ProviderTimeout`` (the original's ``connection_pool_size``/``connection_pool_timeout``). With an
  adaptive timeout (:meth:`SessionPool.use_adaptive_timeout`) the wait is bounded by it instead, and each
  wait teaches it (``vmpooler.providers.adaptive``).
* Sessions are opened lazily. A session idle for longer than ``health_check_after`` seconds is checked
  with one cheap call before it is lent out; a dead one is dropped and replaced, so an expired session
  or a restarted vCenter costs the caller nothing.
* A session whose connection failed is dropped when it comes back, and every idle session is then
  checked before its next use (vCenter may have restarted: their connections and cookies are void).
* Connect failures back off instead of sleeping: after the n-th failure in a row no new connect is tried
  for ``min(n, max_tries) × retry_factor`` seconds, and callers in that window get the last error at
  once (the original slept ``try × retry_factor`` inside the call, up to ``max_tries`` times). Wrong
  credentials therefore cost one login attempt per window, not one per call.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from vmpooler.errors import ProviderError, ProviderUnavailable
from vmpooler.providers.adaptive import ConnectionSlots

if TYPE_CHECKING:
    from vmpooler.providers.adaptive import AdaptiveTimeout
    from vmpooler.providers.base import ConnectionStats
    from vmpooler.providers.vsphere.client import Session

__all__ = ["SessionPool"]

log = logging.getLogger(__name__)

_CLOSE_DEADLINE = 2.0


class SessionPool:
    """Lends vCenter sessions to one thread at a time. Thread-safe."""

    def __init__(
        self,
        connect: Callable[[], Session],
        *,
        server: str,
        size: int,
        timeout: float,
        max_tries: int,
        retry_factor: float,
        health_check_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Store the settings; no connection is opened here."""
        self._connect = connect
        self.server = server
        self.size = size
        self._max_tries = max_tries
        self._retry_factor = retry_factor
        self._health_check_after = health_check_after
        self._clock = clock
        self._slots = ConnectionSlots(size, timeout, what=f"vCenter {server}: no free session")
        self._lock = threading.Lock()
        self._idle: list[Session] = []
        self._live: set[Session] = set()
        self._retired_calls: collections.Counter[str] = collections.Counter()
        self._failures = 0
        self._retry_at = 0.0
        self._last_error: ProviderError | None = None
        self._suspect_before = 0.0  # idle sessions last used before this are checked before use
        self._closed = False

    @property
    def calls(self) -> collections.Counter[str]:
        """SOAP calls made by every session so far, by method name."""
        with self._lock:
            total = collections.Counter(self._retired_calls)
            for session in self._live:
                total.update(session.calls)
        return total

    @property
    def open_sessions(self) -> int:
        with self._lock:
            return len(self._live)

    def use_adaptive_timeout(self, adaptive: AdaptiveTimeout | None) -> None:
        """Wait for a session at most ``adaptive.current`` seconds from now on (None: ``timeout``)."""
        self._slots.adaptive = adaptive

    def stats(self) -> ConnectionStats:
        """Sessions lent out and callers waiting for one, of ``size``."""
        return self._slots.stats()

    @contextlib.contextmanager
    def lease(self) -> Iterator[Session]:
        """Borrow a healthy session for the duration of a ``with`` block.

        Raises:
            ProviderUnavailable: the pool is closed, or vCenter cannot be reached (or is in back-off).
            ProviderTimeout: no session came free within the pool timeout (the adaptive one if set).
            CredentialsRejected: vCenter refused the login.
        """
        if self._closed:
            raise ProviderUnavailable(f"vCenter {self.server}: the provider is stopped")
        self._slots.acquire()
        try:
            session = self._take()
            try:
                yield session
            finally:
                self._give_back(session)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Log out of every idle session (bounded by a short deadline); sessions in use are dropped when
        they come back. Later leases raise ``ProviderUnavailable``."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        closers = [threading.Thread(target=self._discard, args=(s,), daemon=True) for s in idle]
        for thread in closers:
            thread.start()
        deadline = self._clock() + _CLOSE_DEADLINE
        for thread in closers:
            thread.join(max(0.0, deadline - self._clock()))

    # -- internals ----------------------------------------------------------------------------------

    def _take(self) -> Session:
        while True:
            with self._lock:
                session = self._idle.pop() if self._idle else None
            if session is None:
                return self._open()
            idle_for = time.monotonic() - session.last_used
            trusted = idle_for < self._health_check_after and session.last_used >= self._suspect_before
            if trusted or session.alive():
                return session
            log.info("vCenter %s: an idle session is gone; reconnecting", self.server)
            self._discard(session)

    def _give_back(self, session: Session) -> None:
        with self._lock:
            if session.broken:
                self._suspect_before = time.monotonic()
            keep = not (session.broken or self._closed) and len(self._idle) < self.size
            if keep:
                self._idle.append(session)
        if not keep:
            self._discard(session)

    def _discard(self, session: Session) -> None:
        with self._lock:
            if session in self._live:
                self._live.discard(session)
                self._retired_calls.update(session.calls)
        try:
            session.close()
        except Exception:  # closing is best effort; a broken SDK object must not break the caller
            log.debug("vCenter %s: error while closing a session", self.server, exc_info=True)

    def _open(self) -> Session:
        now = self._clock()
        with self._lock:
            if now < self._retry_at and self._last_error is not None:
                raise _again(self._last_error, self._retry_at - now)
        try:
            session = self._connect()
        except ProviderError as exc:
            with self._lock:
                self._failures += 1
                delay = min(self._failures, self._max_tries) * self._retry_factor
                self._retry_at, self._last_error = self._clock() + delay, exc
                failures = self._failures
            log.warning(
                "vCenter %s: connect attempt %d failed: %s; next attempt in %gs",
                self.server,
                failures,
                exc,
                delay,
            )
            raise
        with self._lock:
            if self._failures:
                log.info("vCenter %s: connected again after %d failed attempts", self.server, self._failures)
            self._failures, self._retry_at, self._last_error = 0, 0.0, None
            self._live.add(session)
            closed = self._closed
        if closed:
            self._discard(session)
            raise ProviderUnavailable(f"vCenter {self.server}: the provider is stopped")
        return session


def _again(error: ProviderError, wait: float) -> ProviderError:
    """A fresh copy of the last connect error, saying when the next attempt is."""
    again = type(error)(f"{error} (next connect attempt in {wait:.0f}s)")
    again.transient = error.transient
    return again
