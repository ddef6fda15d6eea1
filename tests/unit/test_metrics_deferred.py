"""Metric updates queued and written in sums (``vmpooler.metrics.DeferredUpdates``), as API workers do."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from vmpooler import metrics

BUCKETS = (0.005, 0.01, 0.1, 1.0)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def deferring() -> Iterator[metrics.DeferredUpdates]:
    """Deferral on, with a timer that never fires during a test: flushes are the test's."""
    deferred = metrics.defer_updates(interval=3600)
    yield deferred
    metrics.stop_deferring()


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_counts_show_after_a_flush_exactly(
    registry: CollectorRegistry, deferring: metrics.DeferredUpdates
) -> None:
    counter = Counter("c", "c", ["k"], registry=registry)
    for _ in range(5):
        metrics.add(counter.labels("a"))
    metrics.add(counter.labels("b"), 2.5)
    assert registry.get_sample_value("c_total", {"k": "a"}) == 0.0  # queued, not yet written
    metrics.flush_updates()
    assert registry.get_sample_value("c_total", {"k": "a"}) == 5.0
    assert registry.get_sample_value("c_total", {"k": "b"}) == 2.5


def test_a_histogram_written_in_sums_equals_one_observed_directly(
    registry: CollectorRegistry, deferring: metrics.DeferredUpdates
) -> None:
    direct = Histogram("direct", "d", ["m"], buckets=BUCKETS, registry=registry)
    queued = Histogram("queued", "q", ["m"], buckets=BUCKETS, registry=registry)
    # on each bound, between bounds, above the last finite one, zero, negative, infinite
    values = [0.005, 0.0051, 0.01, 0.05, 0.1, 1.0, 1.5, 0.0, -2.0, math.inf, 0.003, 0.003]
    for value in values:
        direct.labels("get").observe(value)
        metrics.observe(queued.labels("get"), value)
    metrics.flush_updates()
    found = samples(registry)
    of_direct = {
        (name.removeprefix("direct"), labels): v
        for (name, labels), v in found.items()
        if name.startswith("direct")
    }
    of_queued = {
        (name.removeprefix("queued"), labels): v
        for (name, labels), v in found.items()
        if name.startswith("queued")
    }
    assert of_queued == of_direct
    assert of_queued[("_count", (("m", "get"),))] == len(values)


class RecordingChild:
    """A fake histogram child without prometheus-client's bucket attributes: records its observe calls."""

    def __init__(self) -> None:
        self.observed: list[float] = []

    def observe(self, value: float) -> None:
        self.observed.append(value)


def test_a_child_without_known_buckets_gets_each_observation(deferring: metrics.DeferredUpdates) -> None:
    child = RecordingChild()
    for value in (0.1, 0.2, 0.3):
        metrics.observe(child, value)
    assert child.observed == []
    metrics.flush_updates()
    assert child.observed == [0.1, 0.2, 0.3]


def against_a_busy_timer(*updates: Callable[[], None], times: int = 20_000) -> None:
    """Each update made ``times`` times on a thread of its own, all at once, while a 1 ms timer flushes."""
    metrics.defer_updates(interval=0.001)
    try:
        threads = [threading.Thread(target=lambda u=u: [u() for _ in range(times)]) for u in updates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        metrics.stop_deferring()


def test_nothing_is_lost_between_threads_and_a_busy_timer(registry: CollectorRegistry) -> None:
    counter = Counter("busy", "b", registry=registry)
    against_a_busy_timer(*[lambda: metrics.add(counter)] * 4)
    assert registry.get_sample_value("busy_total") == 80_000


def test_no_observation_is_lost_between_threads_and_a_busy_timer(registry: CollectorRegistry) -> None:
    histogram = Histogram("busy_seconds", "b", buckets=BUCKETS, registry=registry)
    against_a_busy_timer(*[lambda v=v: metrics.observe(histogram, v) for v in (0.001, 0.05, 0.5, 5.0)])
    assert registry.get_sample_value("busy_seconds_count") == 80_000
    assert registry.get_sample_value("busy_seconds_bucket", {"le": "0.005"}) == 20_000
    assert registry.get_sample_value("busy_seconds_bucket", {"le": "1.0"}) == 60_000
    assert registry.get_sample_value("busy_seconds_sum") == pytest.approx(20_000 * 5.551)


def test_counts_of_one_and_other_amounts_add_up_over_flushes(
    registry: CollectorRegistry, deferring: metrics.DeferredUpdates
) -> None:
    counter = Counter("mixed", "m", registry=registry)
    for flush in range(3):
        for _ in range(flush + 2):
            metrics.add(counter)
        metrics.add(counter, 0.5)
        metrics.flush_updates()
    metrics.flush_updates()  # nothing new: nothing added
    assert registry.get_sample_value("mixed_total") == (2 + 3 + 4) + 3 * 0.5


def test_a_negative_increment_is_refused_when_made(deferring: metrics.DeferredUpdates) -> None:
    counter = Counter("neg", "n", registry=CollectorRegistry())
    with pytest.raises(ValueError, match="non-negative"):
        metrics.add(counter, -1)


def test_stopping_writes_what_is_left_and_updates_directly_again(registry: CollectorRegistry) -> None:
    counter = Counter("left", "l", registry=registry)
    metrics.defer_updates(interval=3600)
    metrics.add(counter, 3)
    metrics.stop_deferring()
    assert registry.get_sample_value("left_total") == 3.0
    metrics.add(counter)
    assert registry.get_sample_value("left_total") == 4.0


def test_the_exposition_writes_this_processs_queue_first(deferring: metrics.DeferredUpdates) -> None:
    child = metrics.HTTP_REQUESTS.labels("299", "get", "/deferred-test")
    labels = {"code": "299", "method": "get", "path": "/deferred-test"}
    before = REGISTRY.get_sample_value("vmpooler_http_requests_total", labels) or 0.0
    metrics.add(child)
    text = metrics.exposition().decode()
    line = 'vmpooler_http_requests_total{code="299",method="get",path="/deferred-test"}'
    assert f"{line} {before + 1.0}" in text


def test_mirrored_counters_are_queued_and_gauges_set_at_once(
    registry: CollectorRegistry, deferring: metrics.DeferredUpdates
) -> None:
    counted = metrics.Mirrored(Counter("mc", "m", ["p"], registry=registry), "mc.{}")
    gauge = metrics.Mirrored(Gauge("mg", "m", ["p"], registry=registry), "mg.{}")
    counted.labels("a").inc()
    gauge.labels("a").set(7)
    assert registry.get_sample_value("mc_total", {"p": "a"}) == 0.0
    assert registry.get_sample_value("mg", {"p": "a"}) == 7.0
    metrics.flush_updates()
    assert registry.get_sample_value("mc_total", {"p": "a"}) == 1.0
