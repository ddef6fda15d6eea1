"""``vsphere.sessions.SessionPool`` with a fake opener (no vCenter): its waits for a free session, bounded
by the adaptive timeout when the provider has one, and its connection figures for the pool monitor."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import pytest

from vmpooler.errors import ProviderTimeout
from vmpooler.providers.adaptive import AdaptiveSettings, AdaptiveTimeout
from vmpooler.providers.base import ConnectionStats
from vmpooler.providers.vsphere import VSphereProvider, VSphereSettings
from vmpooler.providers.vsphere.sessions import SessionPool

if TYPE_CHECKING:
    from vmpooler.providers.vsphere.client import Session


class FakeSession:
    """What the pool uses of ``client.Session``."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.broken = False
        self.last_used = time.monotonic()
        self.closed = False

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def make_pool(size: int = 1, timeout: float = 60.0) -> SessionPool:
    opener = cast("Callable[[], Session]", FakeSession)
    return SessionPool(opener, server="vc:443", size=size, timeout=timeout, max_tries=3, retry_factor=1.0)


def lease_once(pool: SessionPool) -> None:
    with pool.lease():
        pass


def adaptive(initial: float, minimum: float = 0.0) -> AdaptiveTimeout:
    return AdaptiveTimeout("vc", AdaptiveSettings(minimum=minimum, maximum=60, initial=initial))


def test_a_lease_waits_the_adaptive_timeout_not_the_configured_one() -> None:
    pool = make_pool(size=1, timeout=60)
    timeout = adaptive(initial=0.05)
    pool.use_adaptive_timeout(timeout)
    with pool.lease():
        started = time.monotonic()
        with pytest.raises(
            ProviderTimeout, match=r"vCenter vc:443: no free session after 0\.05s \(all 1 in use\)"
        ):
            lease_once(pool)
        assert time.monotonic() - started < 5  # not the configured 60 s
    assert timeout.current == 0  # the timed-out wait cut it: round(0.04)


def test_each_lease_records_its_wait() -> None:
    pool = make_pool(size=2)
    timeout = adaptive(initial=30, minimum=5)
    pool.use_adaptive_timeout(timeout)
    for _ in range(10):
        lease_once(pool)
    stats = timeout.stats()
    assert stats.samples == 10 and stats.longest is not None and stats.longest < 1
    assert timeout.current == 5  # ten waits of ~0 s: round(p95 × 1.5) is below the minimum


def test_without_an_adaptive_timeout_the_configured_timeout_applies() -> None:
    pool = make_pool(size=1, timeout=0.05)
    pool.use_adaptive_timeout(None)
    with pool.lease(), pytest.raises(ProviderTimeout, match=r"after 0\.05s"):
        lease_once(pool)


def test_stats_count_leases_and_waiting_callers() -> None:
    pool = make_pool(size=2, timeout=5)
    assert pool.stats() == ConnectionStats(size=2, in_use=0, waiting=0)
    release, entered = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        with pool.lease():
            entered.release()
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads[:2]:
        thread.start()
    assert entered.acquire(timeout=5) and entered.acquire(timeout=5)
    threads[2].start()
    deadline = time.monotonic() + 5
    while pool.stats().waiting == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.stats() == ConnectionStats(size=2, in_use=2, waiting=1)
    release.set()
    for thread in threads:
        thread.join(5)
    assert pool.stats() == ConnectionStats(size=2, in_use=0, waiting=0)
    pool.close()


def test_the_provider_hands_its_adaptive_timeout_to_its_session_pool() -> None:
    settings = VSphereSettings.from_options(
        {"server": "vc.example.com", "username": "u", "password": "p", "connection_pool_size": 3},
        instance="vsphere",
    )
    provider = VSphereProvider("vsphere", settings, {})
    timeout = adaptive(initial=12)
    provider.use_adaptive_timeout(timeout)
    assert provider.adaptive_timeout is timeout
    assert provider.connection_stats() == ConnectionStats(size=3, in_use=0, waiting=0)
    pool = provider._sessions
    pool._connect = FakeSession  # type: ignore[assignment]
    lease_once(pool)
    assert timeout.stats().samples == 1
