"""The Ticker: ordering, cancel, periodic runs without drift, failures, dead actors, stop, 20,000 entries.

Timing tests use intervals of 0.01 s and assert ranges; the deterministic ones drive ``run_due()`` with a
fake clock instead of the thread.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Iterator

import pykka
import pytest

from tests.conftest import TIMEOUT_SCALE, wait_for
from tests.support.clock import FakeClock
from vmpooler.actors.ticker import Ticker
from vmpooler.errors import VmpoolerError


class Counter(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def tick(self) -> None:
        self.count += 1

    def on_receive(self, message: object) -> None:
        self.count += 1


@pytest.fixture
def ticker() -> Iterator[Ticker]:
    t = Ticker()
    t.start()
    yield t
    t.stop()


@pytest.fixture
def fake() -> FakeClock:
    return FakeClock(100.0)


@pytest.fixture
def manual(fake: FakeClock) -> Iterator[Ticker]:
    t = Ticker(clock=fake)
    yield t
    t.stop()


@pytest.fixture
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def test_call_later_runs_in_due_order(ticker: Ticker) -> None:
    seen: list[int] = []
    done = threading.Event()
    ticker.call_later(0.06, done.set)
    for label, delay in [(3, 0.04), (1, 0.0), (2, 0.02)]:
        ticker.call_later(delay, functools.partial(seen.append, label))
    assert done.wait(2)
    assert seen == [1, 2, 3]
    assert ticker.pending() == 0


def test_runs_on_the_ticker_thread(ticker: Ticker) -> None:
    names: list[str] = []
    done = threading.Event()
    ticker.call_later(0, lambda: names.append(threading.current_thread().name))
    ticker.call_later(0, done.set)
    assert done.wait(2)
    assert names == ["ticker"]


def test_cancelled_callback_never_runs(ticker: Ticker) -> None:
    seen: list[str] = []
    done = threading.Event()
    handle = ticker.call_later(0.02, lambda: seen.append("cancelled"))
    ticker.call_later(0.03, done.set)
    assert ticker.pending() == 2
    handle.cancel()
    handle.cancel()  # twice is harmless
    assert handle.cancelled
    assert ticker.pending() == 1
    assert done.wait(2)
    assert seen == []
    assert ticker.pending() == 0


def test_callback_can_cancel_a_later_one_in_the_same_batch(manual: Ticker, fake: FakeClock) -> None:
    seen: list[str] = []
    manual.call_at(101, lambda: later.cancel())
    later = manual.call_at(102, lambda: seen.append("later"))
    fake.now = 105
    assert manual.run_due() == 1
    assert seen == []
    assert manual.pending() == 0


def test_call_every_count_in_a_short_window(ticker: Ticker) -> None:
    runs: list[float] = []
    started = time.monotonic()
    handle = ticker.call_every(0.01, lambda: runs.append(time.monotonic()))
    time.sleep(0.2)
    handle.cancel()
    elapsed = time.monotonic() - started
    count = len(runs)
    assert 5 <= count <= elapsed / 0.01 + 1  # missed runs are skipped, never caught up
    time.sleep(0.03)
    assert len(runs) == count  # nothing after cancel
    assert ticker.pending() == 0


def test_call_every_has_no_drift(manual: Ticker, fake: FakeClock) -> None:
    seen: list[float] = []

    def slow() -> None:
        seen.append(fake.now)
        fake.now += 0.3  # the callback "takes" 0.3 s

    handle = manual.call_every(1.0, slow)
    assert handle.when == 101.0
    for expected in (101.0, 102.0, 103.0):
        fake.now = expected
        assert manual.run_due() == 1
        assert handle.when == expected + 1.0  # from the due time, not from the end of the run
    assert seen == [101.0, 102.0, 103.0]
    assert manual.pending() == 1


def test_call_every_skips_missed_runs(manual: Ticker, fake: FakeClock) -> None:
    seen: list[float] = []
    handle = manual.call_every(1.0, lambda: seen.append(fake.now))
    fake.now = 105.5  # due at 101, missed 102..105
    assert manual.run_due() == 1
    assert handle.when == 106.0
    fake.now = 106.0  # exactly a multiple
    assert manual.run_due() == 1
    assert handle.when == 107.0
    assert seen == [105.5, 106.0]


def test_call_every_jitter_spreads_phases_and_keeps_the_period(manual: Ticker, fake: FakeClock) -> None:
    rng = random.Random(7)
    handles = [manual.call_every(1.0, lambda: None, jitter=0.5, rng=rng) for _ in range(50)]
    firsts = [h.when for h in handles]
    assert all(101.0 <= w <= 101.5 for w in firsts)
    assert len(set(firsts)) == 50
    fake.now = 101.6
    assert manual.run_due() == 50
    assert [h.when for h in handles] == pytest.approx([w + 1.0 for w in firsts])


def test_call_every_rejects_bad_arguments(manual: Ticker) -> None:
    with pytest.raises(ValueError):
        manual.call_every(0, lambda: None)
    with pytest.raises(ValueError):
        manual.call_every(1, lambda: None, jitter=-1)


def test_exceptions_do_not_kill_the_thread(ticker: Ticker, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise ValueError("boom")

    done = threading.Event()
    failures: list[int] = []

    def failing_periodic() -> None:
        failures.append(1)
        raise KeyError("again")

    with caplog.at_level(logging.ERROR, logger="vmpooler.actors.ticker"):
        ticker.call_later(0, boom)
        periodic = ticker.call_every(0.01, failing_periodic)
        ticker.call_later(0.05, done.set)
        assert done.wait(2)
        periodic.cancel()
    assert len(failures) >= 2  # the periodic callback kept its schedule
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "boom" in caplog.text


@pytest.mark.usefixtures("stop_actors")
@pytest.mark.parametrize("style", ["proxy_call", "tell"])
def test_dead_actor_drops_periodic_callback(
    ticker: Ticker, style: str, caplog: pytest.LogCaptureFixture
) -> None:
    ref = Counter.start()
    proxy = ref.proxy()
    callback = proxy.tick if style == "proxy_call" else (lambda: ref.tell("tick"))
    with caplog.at_level(logging.DEBUG, logger="vmpooler.actors.ticker"):
        handle = ticker.call_every(0.01, callback)
        wait_for(lambda: proxy.count.get() >= 2, timeout=2, what="two ticks")
        ref.stop()
        wait_for(lambda: handle.cancelled, timeout=2, what="the periodic callback to be dropped")
    assert ticker.pending() == 0
    assert "actor is dead" in caplog.text
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)


def test_stop_wakes_the_thread_at_once() -> None:
    ticker = Ticker()
    ticker.start()
    ticker.call_later(60, lambda: None)
    time.sleep(0.02)  # let the thread settle into its 60 s wait
    started = time.monotonic()
    ticker.stop()
    assert time.monotonic() - started < 0.5
    assert ticker.pending() == 0
    assert not any(t.name == "ticker" and t.is_alive() for t in threading.enumerate())
    ticker.stop()  # idempotent
    dropped = ticker.call_later(0, lambda: None)  # after stop: dropped
    assert dropped.cancelled
    assert ticker.pending() == 0
    with pytest.raises(VmpoolerError):
        ticker.start()


def test_earlier_callback_takes_effect_at_once(ticker: Ticker) -> None:
    done = threading.Event()
    ticker.call_later(60, lambda: None)
    time.sleep(0.02)
    started = time.monotonic()
    ticker.call_later(0.01, done.set)
    assert done.wait(2)
    assert time.monotonic() - started < 0.5
    assert ticker.pending() == 1


def test_callbacks_scheduled_before_start_run_after_start() -> None:
    ticker = Ticker()
    done = threading.Event()
    ticker.call_later(0, done.set)
    assert not done.wait(0.02)
    with ticker:
        assert done.wait(2)


def test_run_due_refuses_while_the_thread_runs(ticker: Ticker) -> None:
    with pytest.raises(VmpoolerError):
        ticker.run_due()


def test_twenty_thousand_callbacks_run_in_order(ticker: Ticker) -> None:
    n = 20_000
    rng = random.Random(42)
    lead = 1.5 * TIMEOUT_SCALE  # every callback is scheduled before the first is due, even on a busy machine
    base = time.monotonic() + lead
    # Due times on a 1 ms grid within 50 ms: many ties, which must run in scheduling order.
    offsets = [rng.randrange(50) / 1000 for _ in range(n)]
    seen: list[int] = []
    done = threading.Event()

    def record(i: int) -> None:
        seen.append(i)
        if len(seen) == n:
            done.set()

    scheduling = time.monotonic()
    for i, offset in enumerate(offsets):
        ticker.call_at(base + offset, functools.partial(record, i))
    assert time.monotonic() - scheduling < lead
    assert ticker.pending() == n
    assert done.wait(2 * TIMEOUT_SCALE)
    assert seen == sorted(range(n), key=lambda i: (offsets[i], i))
    assert ticker.pending() == 0


def test_mass_cancel_compacts_the_heap(manual: Ticker, fake: FakeClock) -> None:
    seen: list[int] = []
    handles = [manual.call_at(101 + i / 1000, functools.partial(seen.append, i)) for i in range(2000)]
    for handle in handles[::2]:
        handle.cancel()
    assert manual.pending() == 1000
    assert len(manual._heap) < 2000  # cancelled entries were swept, not kept forever
    fake.now = 200
    assert manual.run_due() == 1000
    assert seen == list(range(1, 2000, 2))
