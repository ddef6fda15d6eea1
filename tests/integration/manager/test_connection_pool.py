"""The provider process's connection pool monitor and adaptive timeout, with real actors and Redis: a
dummy with one simulated connection and slow clones makes its calls queue."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.conftest import wait_for
from tests.integration.manager.conftest import make_config
from vmpooler import keys, metrics
from vmpooler.providers.adaptive import AdaptiveTimeout

pytestmark = pytest.mark.integration


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"provider": "dummy"})


def test_a_busy_dummy_records_its_waits_and_its_gauges_move(run_manager, redis):
    # each clone holds the only connection for exactly 1 s: the other clones and the checks queue
    options = (
        "    createvm_max_time: 1\n    connection_pool_size: 1\n    connection_pool_monitor_interval: 1\n"
    )
    config = make_config({"a": 3}, task_limit=3, provider_options=options)
    manager = run_manager(config)
    adaptive = manager.provider.adaptive_timeout
    assert isinstance(adaptive, AdaptiveTimeout) and adaptive.current == 30  # the original's initial
    assert gauge("vmpooler_connection_pool_in_use") == 0  # sampled once at start, before any actor
    assert gauge("vmpooler_adaptive_timeout_seconds") == 30

    def busy() -> bool:
        return (
            gauge("vmpooler_connection_pool_in_use") == 1
            and (gauge("vmpooler_connection_pool_waiting") or 0) >= 1
        )

    wait_for(busy, 10, "a sample of the connection held by a clone, and calls waiting")
    assert gauge("vmpooler_connection_pool_utilization") == 100
    assert gauge("vmpooler_connection_pool_available") == 0
    wait_for(lambda: redis.scard(keys.state_set("ready", "a")) == 3, 15, "three ready VMs")
    stats = adaptive.stats()
    assert stats.samples >= 3 and stats.longest is not None and stats.longest >= 0.5  # waited for a clone
    wait_for(lambda: gauge("vmpooler_connection_pool_in_use") == 0, 5, "an idle pool sampled")
    assert gauge("vmpooler_adaptive_timeout_p95_seconds") is not None
    assert gauge("vmpooler_adaptive_timeout_seconds") == adaptive.current


def test_adaptive_timeouts_and_the_monitor_can_be_turned_off(run_manager):
    extra = "  adaptive_timeout_enabled: false\n  connection_pool_monitor_enabled: false\n"
    metrics.CONNECTION_POOL_IN_USE.labels("dummy").set(-1)
    manager = run_manager(make_config({"a": 1}, extra_config=extra))
    assert manager.provider.adaptive_timeout is None
    assert gauge("vmpooler_connection_pool_in_use") == -1  # no sample at start: the monitor is off
