"""PooledActor and Dispatcher: pykka's actor guarantees on a bounded set of shared threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from tests.conftest import wait_for
from vmpooler.actors.dispatch import Dispatcher, PooledActor

MADE: dict[str, Recorder] = {}


@pytest.fixture
def threads() -> Iterator[Dispatcher]:
    dispatcher = Dispatcher("test", 4)
    yield dispatcher
    dispatcher.stop()


class Recorder(PooledActor):
    """Records what it handles; checks that no two of its messages ever run at once."""

    def __init__(self, dispatcher: Dispatcher, delay: float = 0.0) -> None:
        super().__init__(dispatcher)
        self.seen: list[Any] = []
        self.threads: set[str] = set()
        self.overlaps = 0
        self._busy = False
        self._delay = delay
        self.stopped = threading.Event()
        self.failed: list[BaseException] = []
        MADE[self.actor_urn] = self  # the tests read a dead actor's own record through this

    def on_receive(self, message: Any) -> Any:
        if self._busy:
            self.overlaps += 1
        self._busy = True
        try:
            self.threads.add(threading.current_thread().name)
            if message == "boom":
                raise RuntimeError("boom")
            if self._delay:
                time.sleep(self._delay)
            self.seen.append(message)
            return len(self.seen)
        finally:
            self._busy = False

    def on_stop(self) -> None:
        self.stopped.set()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failed.append(exception_value)

    def report(self) -> tuple[list[Any], int]:
        return list(self.seen), self.overlaps


class Transient(Recorder):
    registered = False


def test_messages_of_one_actor_never_overlap_and_keep_their_order(threads: Dispatcher) -> None:
    ref = Recorder.start(threads, delay=0.001)
    senders = [threading.Thread(target=lambda n=n: [ref.tell((n, i)) for i in range(50)]) for n in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    seen, overlaps = ref.proxy().report().get(timeout=10)
    assert overlaps == 0
    assert sorted(seen) == sorted((n, i) for n in range(4) for i in range(50))
    for n in range(4):  # each sender's messages in the order it sent them
        assert [m for m in seen if m[0] == n] == [(n, i) for i in range(50)]
    ref.stop()


def test_many_actors_share_the_dispatchers_threads(threads: Dispatcher) -> None:
    before = threading.active_count()
    refs = [Recorder.start(threads) for _ in range(200)]
    for i, ref in enumerate(refs):
        ref.tell(i)
    assert [ref.ask("x", timeout=10) for ref in refs] == [2] * 200
    assert threading.active_count() == before  # no thread per actor
    names = set().union(*(ref.proxy().threads.get(timeout=10) for ref in refs))
    assert names <= {f"test-{i}" for i in range(4)}
    for ref in refs:
        ref.stop()


def test_a_busy_actor_does_not_starve_the_others() -> None:
    one = Dispatcher("one", 1)
    order: list[Any] = []  # one thread: appended in the order messages really ran

    class Logged(Recorder):
        def on_receive(self, message: Any) -> Any:
            order.append(message)
            return super().on_receive(message)

    try:
        gate = threading.Event()
        blocker = Recorder.start(one)
        blocker.tell("first")
        busy = Logged.start(one)
        other = Logged.start(one)
        one.submit(lambda: gate.wait(5))  # hold the thread while the mail piles up
        for i in range(500):
            busy.tell(i)
        other.tell("hello")
        gate.set()
        busy.stop(block=True, timeout=20)
        other.stop(block=True, timeout=20)
        blocker.stop(block=True, timeout=20)
        assert len(order) == 501
        assert order.index("hello") <= 32  # after a turn or two of the busy one, not after its 500
    finally:
        one.stop()


def test_ask_answers_errors_and_a_told_error_kills_the_actor(threads: Dispatcher) -> None:
    ref = Recorder.start(threads)
    with pytest.raises(RuntimeError, match="boom"):
        ref.ask("boom", timeout=10)
    assert ref.is_alive()  # an asked error goes to the caller, as in pykka
    actor = MADE[ref.actor_urn]
    ref.tell("boom")
    wait_for(lambda: not ref.is_alive(), 5, "actor dead")
    assert [type(e) for e in actor.failed] == [RuntimeError]
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("after")


def test_stop_runs_on_stop_and_refuses_later_asks(threads: Dispatcher) -> None:
    ref = Recorder.start(threads)
    actor = MADE[ref.actor_urn]
    assert ref.stop(block=True, timeout=10) is True
    assert actor.stopped.is_set()
    assert ref not in pykka.ActorRegistry.get_all()
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("late", timeout=1)


def test_mail_already_queued_behind_a_stop_is_refused_not_lost_silently(threads: Dispatcher) -> None:
    gate = threading.Event()

    class Gated(Recorder):
        def on_receive(self, message: Any) -> Any:
            if message == "wait":
                gate.wait(5)
                return None
            return super().on_receive(message)

    ref = Gated.start(threads)
    ref.tell("wait")
    stop = ref.stop(block=False)
    late = ref.ask("late", block=False)  # queued behind the stop
    gate.set()
    assert stop.get(timeout=10) is True
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=10)


def test_an_unregistered_actor_stays_out_of_the_registry(threads: Dispatcher) -> None:
    ref = Transient.start(threads)
    assert ref not in pykka.ActorRegistry.get_all()
    assert ref.ask("x", timeout=10) == 1
    actor = MADE[ref.actor_urn]
    ref.stop(block=True, timeout=10)
    assert actor.stopped.is_set() and not ref.is_alive()


def test_idle_is_false_while_a_turn_runs(threads: Dispatcher) -> None:
    gate = threading.Event()

    class Slow(Recorder):
        def on_receive(self, message: Any) -> Any:
            gate.wait(5)
            return None

    ref = Slow.start(threads)
    wait_for(threads.idle, 5, "start turn done")
    ref.tell("x")
    assert not threads.idle()
    gate.set()
    wait_for(threads.idle, 5, "idle again")
    ref.stop()


def test_a_dispatcher_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        Dispatcher("none", 0)


def test_stop_now_refuses_the_mail_already_queued(threads: Dispatcher) -> None:
    gate = threading.Event()

    class Quitter(Recorder):
        def on_receive(self, message: Any) -> Any:
            if message == "quit":
                gate.wait(5)  # meanwhile, more mail arrives
                self.stop_now()
                return None
            return super().on_receive(message)

    ref = Quitter.start(threads)
    actor = MADE[ref.actor_urn]
    ref.tell("quit")
    late = ref.ask("late", block=False)
    gate.set()
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=10)
    assert actor.stopped.is_set() and actor.seen == []
