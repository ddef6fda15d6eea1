"""``providers.adaptive``: the adaptive timeout's rules on a fake clock, the connection slots, and the
connection pool monitor's verdict and gauges."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import REGISTRY

from tests.support.clock import FakeClock
from tests.support.providers import BareProvider
from vmpooler.config import ProviderConfig
from vmpooler.config.schema import GlobalConfig
from vmpooler.errors import ProviderTimeout
from vmpooler.providers.adaptive import AdaptiveSettings, AdaptiveTimeout, ConnectionSlots, MonitorSettings
from vmpooler.providers.base import ConnectionStats, ProviderSettings
from vmpooler.providers.monitor import ConnectionMonitor, PoolState, pool_state


def make(clock: FakeClock | None = None, **settings: Any) -> AdaptiveTimeout:
    return AdaptiveTimeout("p", AdaptiveSettings(**settings), clock=clock or FakeClock())


def feed(timeout: AdaptiveTimeout, *waits: float) -> None:
    for wait in waits:
        timeout.record_wait(wait)


# -- the rules ---------------------------------------------------------------------------------------


def test_it_starts_at_the_initial_value_and_ignores_fewer_than_ten_waits() -> None:
    timeout = make()
    assert timeout.current == 30
    feed(timeout, *[0.1] * 9)
    assert timeout.current == 30 and timeout.stats().samples == 9
    timeout.record_wait(0.1)  # the tenth: p95 0.1 s × 1.5 rounds to 0, bounded by the minimum
    assert timeout.current == 5


def test_it_follows_the_p95_wait_times_one_and_a_half() -> None:
    timeout = make()
    feed(timeout, *[1.0] * 18, 40.0, 40.0)  # 20 waits: the p95 (nearest rank, the 19th) is 40 s
    assert timeout.current == 60  # round(40 × 1.5) = 60
    timeout = make()
    feed(timeout, *[1.0] * 19, 40.0)  # the 19th of 20 is 1 s: the one slow wait is above p95
    assert timeout.current == 5  # round(1.5) = 2, raised to the minimum


def test_it_rounds_half_away_from_zero_as_the_original() -> None:
    timeout = make(initial=10, minimum=1)
    feed(timeout, *[11.0] * 10)  # 16.5 rounds to 17 (Python's round would give 16)
    assert timeout.current == 17


def test_it_changes_only_when_it_moved_by_more_than_five_seconds() -> None:
    timeout = make(initial=30)
    feed(timeout, *[22.0] * 10)  # wants 33: 3 s away
    assert timeout.current == 30
    feed(timeout, *[23.4] * 10)  # wants round(35.1) = 35: 5 s away, not more
    assert timeout.current == 30
    feed(timeout, *[24.0] * 10)  # wants 36: 6 s away
    assert timeout.current == 36


def test_it_stays_between_the_minimum_and_the_maximum() -> None:
    timeout = make(minimum=5, maximum=60, initial=30)
    feed(timeout, *[100.0] * 10)
    assert timeout.current == 60
    feed(timeout, *[0.0] * 100)  # the slow ones are pushed out of the last 100
    assert timeout.current == 5
    assert make(minimum=5, maximum=60, initial=90).current == 60  # the initial value is bounded too
    assert make(minimum=10, maximum=4, initial=1).current == 10  # a minimum above the maximum wins


def test_each_timed_out_wait_cuts_it_by_a_fifth_not_below_the_minimum() -> None:
    timeout = make(initial=30, minimum=5)
    cuts = []
    for _ in range(8):
        timeout.record_failure()
        cuts.append(timeout.current)
    assert cuts == [24, 19, 15, 12, 10, 8, 6, 5]


def test_it_keeps_the_last_hundred_waits() -> None:
    timeout = make()
    feed(timeout, *[float(i) for i in range(150)])
    stats = timeout.stats()
    assert stats.samples == 100 and stats.longest == 149 and stats.p50 == 99


def test_stats_without_and_with_samples() -> None:
    timeout = make()
    assert timeout.stats().samples == 0 and timeout.stats().p95 is None and timeout.stats().current == 30
    feed(timeout, 1.0, 2.0, 3.0, 4.0)
    stats = timeout.stats()
    assert (stats.samples, stats.average, stats.p50, stats.p95, stats.longest) == (4, 2.5, 2.0, 4.0, 4.0)


def test_wait_times_the_acquire_on_the_clock_and_learns_from_a_timeout() -> None:
    clock = FakeClock()
    timeout = make(clock, initial=30)
    offered: list[float] = []

    def slow(t: float) -> bool:
        offered.append(t)
        clock.now += 2.5
        return True

    assert timeout.wait(slow) is True
    assert offered == [30] and timeout.stats().longest == 2.5
    assert timeout.wait(lambda t: False) is False
    assert timeout.current == 24 and timeout.stats().samples == 1  # a timeout is no sample


# -- the connection slots ------------------------------------------------------------------------------


def test_slots_count_holders_and_time_out_with_the_providers_timeout_without_adaptive() -> None:
    slots = ConnectionSlots(2, 0.01, what="no free connection to p")
    with slots.hold():
        assert slots.stats() == ConnectionStats(size=2, in_use=1, waiting=0)
        with slots.hold():
            assert slots.stats().available == 0 and slots.stats().utilization == 100
            with pytest.raises(
                ProviderTimeout, match=r"no free connection to p after 0.01s \(all 2 in use\)"
            ):
                slots.acquire()
    assert slots.stats() == ConnectionStats(size=2, in_use=0, waiting=0)


def test_slots_wait_the_adaptive_timeout_and_teach_it() -> None:
    slots = ConnectionSlots(1, 99, what="busy")
    adaptive = make(initial=0.02, minimum=0, maximum=60)
    slots.adaptive = adaptive
    with slots.hold(), pytest.raises(ProviderTimeout, match=r"after 0\.02s"):
        slots.acquire()
    assert adaptive.current == 0  # round(0.016) after the failure
    assert adaptive.stats().samples == 1  # the first hold's wait (none): a timeout is no sample
    with slots.hold():
        pass
    assert adaptive.stats().samples == 2


def test_slots_count_the_callers_that_wait() -> None:
    slots = ConnectionSlots(1, 5, what="busy")
    slots.acquire()

    def wait_for_one() -> None:
        with slots.hold():
            pass

    waiter = threading.Thread(target=wait_for_one)
    waiter.start()
    for _ in range(500):
        if slots.stats().waiting == 1:
            break
        threading.Event().wait(0.01)
    assert slots.stats() == ConnectionStats(size=1, in_use=1, waiting=1)
    slots.release()
    waiter.join(5)
    assert slots.stats() == ConnectionStats(size=1, in_use=0, waiting=0)


# -- the monitor's verdict and gauges -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("in_use", "waiting", "state"),
    [
        (6, 0, PoolState.HEALTHY),
        (7, 0, PoolState.WARNING),
        (0, 3, PoolState.WARNING),
        (9, 0, PoolState.CRITICAL),
        (0, 6, PoolState.CRITICAL),
        (0, 2, PoolState.HEALTHY),
        (0, 5, PoolState.WARNING),
    ],
)
def test_pool_state(in_use: int, waiting: int, state: PoolState) -> None:
    assert pool_state(ConnectionStats(size=10, in_use=in_use, waiting=waiting)) is state


class _Pooled(BareProvider):
    def __init__(self) -> None:
        super().__init__("monitored", ProviderSettings(), {})
        self.stats = ConnectionStats(size=10, in_use=0)

    def connection_stats(self) -> ConnectionStats:
        return self.stats


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"provider": "monitored", **labels})


def test_the_monitor_sets_the_gauges_and_logs_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    provider = _Pooled()
    adaptive = make()
    feed(adaptive, 1.0, 2.0)
    monitor = ConnectionMonitor("monitored", provider, adaptive)
    critical_before = gauge("vmpooler_connection_pool_unhealthy_total", state="critical") or 0
    provider.stats = ConnectionStats(size=10, in_use=9, waiting=1)
    caplog.set_level("INFO", logger="vmpooler.providers.monitor")
    monitor.sample()
    monitor.sample()
    assert monitor.state is PoolState.CRITICAL
    assert gauge("vmpooler_connection_pool_in_use") == 9
    assert gauge("vmpooler_connection_pool_available") == 1
    assert gauge("vmpooler_connection_pool_waiting") == 1
    assert gauge("vmpooler_connection_pool_utilization") == 90
    assert gauge("vmpooler_adaptive_timeout_seconds") == 30
    assert gauge("vmpooler_adaptive_timeout_p95_seconds") == 2
    assert gauge("vmpooler_connection_pool_unhealthy_total", state="critical") == critical_before + 2
    provider.stats = ConnectionStats(size=10, in_use=1)
    monitor.sample()
    messages = [r.getMessage() for r in caplog.records if r.name == "vmpooler.providers.monitor"]
    assert messages == [
        "connection pool of monitored is critical: 9 of 10 connections in use, 1 call(s) waiting",
        "connection pool of monitored is healthy again: 1 of 10 connections in use, 0 call(s) waiting",
    ]


class _Broken(_Pooled):
    def connection_stats(self) -> ConnectionStats:
        raise RuntimeError("boom")


def test_the_monitor_survives_a_provider_that_fails(caplog: pytest.LogCaptureFixture) -> None:
    ConnectionMonitor("monitored", _Broken(), None).sample()
    assert "connection pool monitor of monitored failed" in caplog.text


# -- the settings ---------------------------------------------------------------------------------------


def test_provider_entry_first_then_config_then_defaults() -> None:
    assert ProviderConfig.from_dict("dummy", {}).adaptive == AdaptiveSettings()
    assert ProviderConfig.from_dict("dummy", {}).monitor == MonitorSettings()
    globals_ = GlobalConfig(connection_pool_timeout_min=2, connection_pool_monitor_interval=30)
    spec = ProviderConfig.from_dict(
        "dummy",
        {
            "connection_pool_timeout_max": 20,
            "adaptive_timeout_enabled": False,
            "connection_pool_monitor_enabled": False,
        },
        globals_,
    )
    assert spec.adaptive == AdaptiveSettings(enabled=False, minimum=2, maximum=20, initial=30)
    assert spec.monitor == MonitorSettings(enabled=False, interval=30)
