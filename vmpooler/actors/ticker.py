"""The timer service: one thread that runs callbacks when they fall due (pykka has no timers).

Actors never sleep. An actor that wants to act later asks the ``Ticker`` to call it back, and the
callback is a message to the actor: ``ticker.call_later(30, self._proxy.poll_ready)`` or
``ticker.call_every(60, lambda: ref.tell(Tick()))``. One daemon thread named ``ticker`` serves every
actor of the process from one heap of due times, so 20,000 scheduled callbacks cost 20,000 heap
entries and no extra threads.

Callbacks run **on the ticker thread**, one after another, so they must be quick and never block:
send a message (``tell``, ``proxy.method.defer()``, or a proxy call whose future is left alone) and
return. Never call ``.get()`` inside a callback. A callback that raises is logged and the thread carries
on. A callback whose actor is dead (it raises ``pykka.ActorDeadError``, or returns a pykka future that
already holds one) is dropped, and if it was periodic it is cancelled.

The thread waits on a ``threading.Condition`` until the earliest due time, so ``stop()`` and a new,
earlier callback take effect at once; there is no polling sleep.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from types import TracebackType

import pykka

from vmpooler.errors import VmpoolerError

__all__ = ["Callback", "Handle", "Ticker"]

log = logging.getLogger(__name__)

Callback = Callable[[], object]
"""A scheduled callback: no arguments; its return value is ignored (except a dead actor's future)."""

# The heap is rebuilt without its cancelled entries once there are at least this many of them and they
# are at least half of it, so that cancelling stays O(1) amortised and memory stays bounded.
_COMPACT_MIN = 256


class Handle:
    """One scheduled callback, as returned by ``Ticker.call_later``, ``call_at`` and ``call_every``.

    Only the ticker creates handles. ``cancel()`` may be called from any thread, any number of times.
    """

    __slots__ = ("_callback", "_cancelled", "_done", "_in_heap", "_interval", "_ticker", "_when")

    def __init__(self, ticker: Ticker, callback: Callback, when: float, interval: float | None) -> None:
        self._ticker = ticker
        self._callback = callback
        self._when = when
        self._interval = interval
        self._cancelled = False
        # True once the handle no longer counts in Ticker.pending(): a one-shot taken off the heap to
        # run, a cancelled handle, or a handle dropped by stop().
        self._done = False
        self._in_heap = False

    @property
    def when(self) -> float:
        """The due time of the next (or last) run, on the ticker's clock."""
        return self._when

    @property
    def interval(self) -> float | None:
        """The period in seconds of a ``call_every`` handle; None for a one-shot."""
        return self._interval

    @property
    def cancelled(self) -> bool:
        """True once ``cancel()`` was called (or the ticker dropped the callback)."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the callback from running again. Does nothing if it already ran or was cancelled.

        A cancel that happens before the ticker thread starts the callback always wins; a cancel from
        another thread while the callback is running cannot interrupt that run, but prevents the next.
        """
        self._ticker._cancel(self)

    def __repr__(self) -> str:
        name = getattr(self._callback, "__qualname__", None) or repr(self._callback)
        every = f" every={self._interval:g}s" if self._interval is not None else ""
        state = " cancelled" if self._cancelled else ""
        return f"<Handle {name} when={self._when:.3f}{every}{state}>"


class Ticker:
    """Runs callbacks at given times on one daemon thread.

    Args:
        clock: a monotonic clock in seconds; ``time.monotonic`` unless a test injects a fake one. With a
            fake clock, drive the ticker with ``run_due()`` instead of ``start()``.
        name: the thread's name (it shows in log lines).

    The ticker is single-use: ``start()`` once, ``stop()`` once (further calls do nothing).
    Callbacks may be scheduled before ``start()``; they run once the thread is up.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, name: str = "ticker") -> None:
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Handle]] = []
        self._seq = itertools.count()
        self._live = 0  # handles that will still run: pending()
        self._dead = 0  # cancelled entries still in the heap
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._rng = random.Random()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the ticker thread. Does nothing if it is already running.

        Raises:
            VmpoolerError: if the ticker was stopped (a stopped ticker cannot be restarted).
        """
        with self._cond:
            if self._stopped:
                raise VmpoolerError("a stopped Ticker cannot be started again")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Drop every pending callback, wake the thread at once and wait for it to end.

        Idempotent. Once it returns, no callback runs again (unless the thread was stuck in a callback
        for longer than ``timeout``, which is logged). Callbacks scheduled afterwards are dropped. Called
        from a callback (on the ticker thread), it does not wait for itself.

        Args:
            timeout: seconds to wait for the thread to finish the callback it may be running.
        """
        with self._cond:
            if not self._stopped:
                self._stopped = True
                dropped = self._live
                for _, _, handle in self._heap:
                    handle._done = True
                    handle._in_heap = False
                self._heap.clear()
                self._live = self._dead = 0
                self._cond.notify_all()
                log.debug("ticker stopping; %d pending callback(s) dropped", dropped)
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        thread.join(timeout)
        if thread.is_alive():
            log.warning("ticker thread still busy in a callback %.1fs after stop()", timeout)

    def __enter__(self) -> Ticker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scheduling --------------------------------------------------------------------------------

    def call_later(self, delay: float, callback: Callback) -> Handle:
        """Run ``callback`` once, ``delay`` seconds from now (a negative delay means now)."""
        return self.call_at(self._clock() + max(delay, 0.0), callback)

    def call_at(self, monotonic_time: float, callback: Callback) -> Handle:
        """Run ``callback`` once at ``monotonic_time`` on the ticker's clock (at once if it has passed).

        Callbacks due at the same time run in the order they were scheduled.
        """
        handle = Handle(self, callback, monotonic_time, None)
        self._schedule(handle)
        return handle

    def call_every(
        self,
        interval: float,
        callback: Callback,
        *,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> Handle:
        """Run ``callback`` every ``interval`` seconds until the handle is cancelled.

        The first run is ``interval`` seconds from now, plus a random extra in ``[0, jitter]`` seconds
        when ``jitter`` is given. That extra sets the phase of the whole series: each next run is due
        exactly ``interval`` after the previous due time (no drift), so many series started at the same
        moment stay spread out. If the thread fell behind, the missed runs are skipped, not caught up.
        A callback that raises keeps its schedule; one whose actor is dead is cancelled.

        Args:
            interval: seconds between runs; must be positive.
            callback: what to run.
            jitter: the largest random extra delay of the first run, in seconds; not negative.
            rng: the source of the jitter; a private ``random.Random`` if omitted.

        Raises:
            ValueError: if ``interval`` is not positive or ``jitter`` is negative.
        """
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        if not jitter >= 0:
            raise ValueError(f"jitter must not be negative, not {jitter!r}")
        extra = (rng or self._rng).uniform(0.0, jitter) if jitter else 0.0
        handle = Handle(self, callback, self._clock() + interval + extra, interval)
        self._schedule(handle)
        return handle

    def pending(self) -> int:
        """How many callbacks will still run: scheduled one-shots plus live periodic ones."""
        with self._cond:
            return self._live

    def run_due(self) -> int:
        """Run, on the calling thread, every callback due by now on the ticker's clock.

        For tests with a fake clock, on a ticker whose thread was never started. Callbacks that the
        run schedules for "now" wait for the next call.

        Returns:
            How many callbacks ran.

        Raises:
            VmpoolerError: if the ticker thread is running (callbacks must only run on one thread).
        """
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                raise VmpoolerError("run_due() is only for a ticker whose thread is not running")
            due = self._take_due(self._clock())
        return self._run_batch(due)

    # -- internals (the heap is only touched with self._cond held) --------------------------------

    def _schedule(self, handle: Handle) -> None:
        with self._cond:
            if self._stopped:
                handle._cancelled = handle._done = True
                log.debug("ticker is stopped; dropped %r", handle)
                return
            self._live += 1
            self._push(handle)

    def _push(self, handle: Handle) -> None:
        heapq.heappush(self._heap, (handle._when, next(self._seq), handle))
        handle._in_heap = True
        if self._heap[0][2] is handle:
            self._cond.notify()  # a new earliest due time: the thread must shorten its wait

    def _cancel(self, handle: Handle) -> None:
        with self._cond:
            if handle._cancelled:
                return
            handle._cancelled = True
            if handle._done or self._stopped:
                return
            handle._done = True
            self._live -= 1
            if handle._in_heap:
                self._dead += 1
                if self._dead >= _COMPACT_MIN and 2 * self._dead >= len(self._heap):
                    self._compact()

    def _compact(self) -> None:
        kept = []
        for entry in self._heap:
            if entry[2]._cancelled:
                entry[2]._in_heap = False
            else:
                kept.append(entry)
        heapq.heapify(kept)
        self._heap = kept
        self._dead = 0

    def _take_due(self, now: float) -> list[Handle]:
        """Pop every live handle due by ``now``, in due order; drop cancelled entries met on the way."""
        heap = self._heap
        due: list[Handle] = []
        while heap and (heap[0][0] <= now or heap[0][2]._cancelled):
            handle = heapq.heappop(heap)[2]
            handle._in_heap = False
            if handle._cancelled:
                self._dead -= 1
                continue
            if handle._interval is None:
                handle._done = True
                self._live -= 1
            due.append(handle)
        return due

    def _run(self) -> None:
        log.debug("ticker thread started")
        while True:
            with self._cond:
                due = self._wait_for_due()
            if due is None:
                break
            self._run_batch(due)
        log.debug("ticker thread ended")

    def _wait_for_due(self) -> list[Handle] | None:
        """Wait until something is due and return it; None once the ticker is stopped."""
        while not self._stopped:
            now = self._clock()
            due = self._take_due(now)
            if due:
                return due
            self._cond.wait(self._heap[0][0] - now if self._heap else None)
        return None

    def _run_batch(self, due: list[Handle]) -> int:
        ran = 0
        for handle in due:
            if self._stopped:
                break
            if handle._cancelled:
                continue
            self._invoke(handle)
            ran += 1
            if handle._interval is not None:
                self._reschedule(handle)
        return ran

    def _invoke(self, handle: Handle) -> None:
        try:
            result = handle._callback()
            if isinstance(result, pykka.Future):
                _raise_if_dead(result)
        except pykka.ActorDeadError:
            log.debug("dropped %r: its actor is dead", handle)
            handle.cancel()
        except Exception:
            log.exception("ticker callback %r failed", handle)

    def _reschedule(self, handle: Handle) -> None:
        """Put a periodic handle back on the heap, due one interval after its last due time."""
        with self._cond:
            if handle._cancelled:
                return
            if self._stopped:
                handle._done = True
                return
            interval = handle._interval
            assert interval is not None
            now = self._clock()
            behind = now - handle._when
            skipped = int(behind // interval) if behind >= interval else 0
            when = handle._when + (skipped + 1) * interval
            while when <= now:  # guard against rounding at an exact multiple
                skipped += 1
                when += interval
            if skipped:
                log.debug("%r fell behind; skipped %d run(s)", handle, skipped)
            handle._when = when
            self._push(handle)


def _raise_if_dead(future: pykka.Future[object]) -> None:
    """Raise ``ActorDeadError`` if a proxy call's future already holds one; never block.

    A proxy call to a dead actor does not raise: it returns a future that is already failed. Any other
    outcome (still running, a value, the actor's own error) belongs to the actor and is left alone.
    """
    try:
        future.get(timeout=0)
    except pykka.ActorDeadError:
        raise
    except Exception:
        return
