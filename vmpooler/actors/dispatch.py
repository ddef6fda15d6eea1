"""Pykka actors that share a bounded pool of threads instead of owning one each.

A :class:`PooledActor` is a ``pykka.Actor`` like any other (``start``, ``tell``, ``ask``, proxies,
``on_start``/``on_stop``/``on_failure``, the registry), but it has no thread of its own. Its inbox is a
:class:`_Mailbox`; the first message put into an idle mailbox hands the actor to its
:class:`Dispatcher`, whose threads give it a *turn*: up to ``_TURN`` messages, one at a time. An actor
is in at most one dispatcher queue and runs on at most one thread at a time, so its messages are still
handled one after another, never concurrently: the actor guarantee is unchanged, only the thread is
borrowed. An actor with more mail after its turn goes to the back of the queue, so a busy actor cannot
starve the others.

A provider process runs two dispatchers (``vmpooler.worker``): one for its PoolActors and its
ProviderActor, one for its VMActors, whose handlers block in provider calls. A process therefore has a
fixed number of threads however many pools and VMs it serves (docs/architecture.md, "Threads").
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Self

import pykka
from pykka import ActorDeadError, ActorRegistry, messages

if TYPE_CHECKING:
    from pykka._envelope import Envelope

__all__ = ["Dispatcher", "PooledActor"]

log = logging.getLogger(__name__)

_TURN = 16  # messages an actor handles before it lets the others have the thread
_URNS = itertools.count(1)


class Dispatcher:
    """A fixed set of daemon threads that run the turns of :class:`PooledActor` s.

    Args:
        name: the threads' name prefix (it shows in log lines and in ``ps -L``).
        threads: how many threads; at least 1.
    """

    def __init__(self, name: str, threads: int) -> None:
        if threads < 1:
            raise ValueError(f"a dispatcher needs at least one thread, not {threads}")
        self.name = name
        self.size = threads
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._pending = 0  # turns submitted and not finished
        self._count_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, turn: Callable[[], None]) -> None:
        with self._count_lock:
            self._pending += 1
        self._queue.put(turn)

    def idle(self) -> bool:
        """True when no turn is queued or running (a shutdown waits for this before stopping the
        provider, so that calls in flight can finish)."""
        with self._count_lock:
            return self._pending == 0

    def stop(self, timeout: float = 5.0) -> None:
        """Let the threads finish the turn they are in, then end them (queued turns are dropped)."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _work(self) -> None:
        while True:
            turn = self._queue.get()
            if turn is None:
                return
            try:
                turn()
            except BaseException:  # a turn never raises (PooledActor._turn catches); belt and braces
                log.exception("an actor turn on %s failed", threading.current_thread().name)
            finally:
                with self._count_lock:
                    self._pending -= 1


class _Mailbox:
    """A pykka ``ActorInbox`` that schedules its actor's turn when mail arrives while it is idle."""

    __slots__ = ("_closed", "_items", "_lock", "_schedule", "_scheduled")

    def __init__(self) -> None:
        self._items: collections.deque[Envelope[Any]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = True  # until the actor is bound: mail waits for its first turn
        self._schedule: Callable[[], None] | None = None
        self._closed = False

    def bind(self, schedule: Callable[[], None]) -> None:
        """Called once at start: from now on idle mail schedules a turn; the first turn runs now."""
        self._schedule = schedule
        schedule()

    def put(self, envelope: Envelope[Any], /) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._items.append(envelope)
                wake = not self._scheduled
                self._scheduled = True
        if closed:
            _refuse(envelope)
        elif wake:
            assert self._schedule is not None
            self._schedule()

    def take(self) -> Envelope[Any] | None:
        """The next envelope, or None when empty; then the actor is idle until the next ``put``."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._scheduled = False
            return None

    def close(self) -> list[Envelope[Any]]:
        """Refuse further mail; return what is left."""
        with self._lock:
            self._closed = True
            left = list(self._items)
            self._items.clear()
            return left

    # The rest of pykka's ActorInbox protocol (pykka's own teardown uses it; ours uses ``close``).
    def get(self) -> Envelope[Any]:
        with self._lock:
            return self._items.popleft()

    def empty(self) -> bool:
        with self._lock:
            return not self._items


def _refuse(envelope: Envelope[Any]) -> None:
    """Answer an ``ask`` to a stopped actor as pykka does; a ``tell`` is dropped."""
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, messages._ActorStop):  # pykka's own stop message
        envelope.reply_to.set(None)
    else:
        error = ActorDeadError("the actor stopped before handling the message")
        envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))


class PooledActor(pykka.Actor):
    """A pykka actor whose turns run on ``dispatcher`` instead of a thread of its own.

    Subclasses call ``super().__init__(dispatcher)`` and otherwise write an ordinary pykka actor.
    A subclass with ``registered = False`` stays out of pykka's ``ActorRegistry``: for actors that come
    and go by the thousand (VMActors), whose owner stops them, since the registry is a list behind a
    lock that formats a debug message on every change.
    """

    registered: ClassVar[bool] = True

    actor_inbox: _Mailbox  # pykka declares its Protocol; ours implements it

    def __init__(self, dispatcher: Dispatcher) -> None:
        # pykka.Actor.__init__'s fields, with a process-unique URN from a counter instead of uuid4 (a
        # VMActor is made for each provider check: thousands a minute at 10,000 VMs)
        self.actor_urn = f"urn:vmpooler:actor:{next(_URNS)}"
        self.actor_inbox = self._create_actor_inbox()
        self.actor_stopped = threading.Event()
        self._actor_ref = pykka.ActorRef(self)
        self._dispatcher = dispatcher
        self._started = False

    @staticmethod
    def _create_actor_inbox() -> _Mailbox:
        return _Mailbox()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        if cls.registered:
            return super().start(*args, **kwargs)
        actor = cls(*args, **kwargs)
        actor._start_actor_loop()
        return actor.actor_ref

    def _stop(self) -> None:
        if self.registered:
            super()._stop()
            return
        self.actor_stopped.set()
        try:
            self.on_stop()
        except Exception:
            self._handle_failure(*sys.exc_info())

    def stop_now(self) -> None:
        """Stop at the end of the message being handled (``on_stop`` runs now); mail already queued
        is refused, not handled: ``stop()`` would handle it first."""
        self._stop()

    def _start_actor_loop(self) -> None:
        self.actor_inbox.bind(lambda: self._dispatcher.submit(self._turn))

    def _turn(self) -> None:
        if not self._started:
            self._started = True
            self._actor_loop_setup()  # on_start; a failure there stops the actor
        for _ in range(_TURN):
            if self.actor_stopped.is_set():
                break
            envelope = self.actor_inbox.take()
            if envelope is None:
                return
            self._handle(envelope)
        if self.actor_stopped.is_set():
            for envelope in self.actor_inbox.close():
                _refuse(envelope)
            return
        self._dispatcher.submit(self._turn)  # more mail: back of the queue

    def _handle(self, envelope: Envelope[Any]) -> None:
        """One message, with pykka's semantics: an ``ask`` gets the answer or the exception; an
        exception from a ``tell`` is logged, stops the actor and runs ``on_failure``."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                envelope.reply_to.set_exception()
            else:
                exc_info = sys.exc_info()
                self._handle_failure(*exc_info)
                try:
                    self.on_failure(*exc_info)
                except Exception:
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # as pykka: KeyboardInterrupt, SystemExit stop every actor
            self._stop()
            ActorRegistry.stop_all(block=False)
