"""The connection pool monitor of a provider process (reference §4.11).

Every ``connection_pool_monitor_interval`` seconds (10) the ticker samples the provider's
``connection_stats()`` and its adaptive timeout and sets the gauges ``vmpooler_connection_pool_in_use``,
``_available``, ``_waiting``, ``_utilization`` (percent), ``vmpooler_adaptive_timeout_seconds`` and
``vmpooler_adaptive_timeout_p95_seconds`` (``{provider}``). The pool is *critical* at 90 % in use or
more than 5 callers waiting, *warning* at 70 % or more than 2 waiting, else *healthy*; a change of
state is logged once, and each sample in warning or critical counts in
``vmpooler_connection_pool_unhealthy{provider,state}`` (the original's ``connection_pool.<p>.critical``
and ``.warning`` counters).

:func:`watch_connections` also gives the provider its adaptive timeout (``Provider.use_adaptive_timeout``).
"""

from __future__ import annotations

import enum
import logging
from typing import TYPE_CHECKING

from vmpooler import metrics
from vmpooler.providers.adaptive import AdaptiveSettings, AdaptiveTimeout, MonitorSettings

if TYPE_CHECKING:
    from vmpooler.actors.ticker import Handle, Ticker
    from vmpooler.config import Config
    from vmpooler.providers.base import ConnectionStats, Provider

__all__ = ["ConnectionMonitor", "PoolState", "pool_state", "watch_connections"]

log = logging.getLogger(__name__)


class PoolState(enum.Enum):
    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"


def pool_state(stats: ConnectionStats) -> PoolState:
    """The original's verdict: critical at >= 90 % or > 5 waiting, warning at >= 70 % or > 2 waiting."""
    if stats.utilization >= 90 or stats.waiting > 5:
        return PoolState.CRITICAL
    if stats.utilization >= 70 or stats.waiting > 2:
        return PoolState.WARNING
    return PoolState.HEALTHY


class ConnectionMonitor:
    """Samples one provider's connections and adaptive timeout into the gauges.

    :meth:`sample` runs on the ticker thread: it only reads counters under the provider's lock.
    """

    def __init__(self, name: str, provider: Provider, adaptive: AdaptiveTimeout | None) -> None:
        self.name = name
        self._provider = provider
        self._adaptive = adaptive
        self._state = PoolState.HEALTHY

    @property
    def state(self) -> PoolState:
        """The state of the last sample (healthy before the first)."""
        return self._state

    def sample(self) -> None:
        """Set the gauges once; log a change of state. Never raises (a failure is logged)."""
        try:
            stats = self._provider.connection_stats()
            if stats is not None:
                self._connections(stats)
            if self._adaptive is not None:
                self._timeout(self._adaptive)
        except Exception as exc:
            log.warning("connection pool monitor of %s failed: %s", self.name, exc)

    def _connections(self, stats: ConnectionStats) -> None:
        name = self.name
        metrics.CONNECTION_POOL_IN_USE.labels(name).set(stats.in_use)
        metrics.CONNECTION_POOL_AVAILABLE.labels(name).set(stats.available)
        metrics.CONNECTION_POOL_WAITING.labels(name).set(stats.waiting)
        metrics.CONNECTION_POOL_UTILIZATION.labels(name).set(stats.utilization)
        state, previous = pool_state(stats), self._state
        self._state = state
        if state is not PoolState.HEALTHY:
            metrics.CONNECTION_POOL_UNHEALTHY.labels(name, state.value).inc()
        if state is previous:
            return
        figures = f"{stats.in_use} of {stats.size} connections in use, {stats.waiting} call(s) waiting"
        if state is not PoolState.HEALTHY:  # a capacity signal, not a failure of the process
            log.warning("connection pool of %s is %s: %s", name, state.value, figures)
        else:
            log.info("connection pool of %s is healthy again: %s", name, figures)

    def _timeout(self, adaptive: AdaptiveTimeout) -> None:
        stats = adaptive.stats()
        metrics.ADAPTIVE_TIMEOUT.labels(self.name).set(stats.current)
        if stats.p95 is not None:
            metrics.ADAPTIVE_TIMEOUT_P95.labels(self.name).set(stats.p95)


def watch_connections(config: Config, name: str, provider: Provider, ticker: Ticker) -> Handle | None:
    """Give ``provider`` its adaptive timeout and sample its connections on ``ticker``, as its provider
    entry (else ``:config:``) says; once, at the start of the provider process, before any actor starts.

    Args:
        provider: the plugin itself (not behind its circuit breaker).

    Returns:
        The periodic sample's handle (the ticker's stop cancels it), or None when the monitor is off.
    """
    spec = config.providers.get(name)
    adaptive_settings = spec.adaptive if spec is not None else AdaptiveSettings()
    monitor_settings = spec.monitor if spec is not None else MonitorSettings()
    adaptive = AdaptiveTimeout(name, adaptive_settings) if adaptive_settings.enabled else None
    provider.use_adaptive_timeout(adaptive)
    if adaptive is not None:
        log.info(
            "adaptive connection timeout of %s: %gs (between %gs and %gs)",
            name,
            adaptive.current,
            adaptive.minimum,
            adaptive.maximum,
        )
    if not monitor_settings.enabled:
        return None
    monitor = ConnectionMonitor(name, provider, adaptive)
    monitor.sample()
    return ticker.call_every(monitor_settings.interval, monitor.sample)
