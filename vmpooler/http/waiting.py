"""Waiting checkouts in one API worker: the threads that wait, and the one thread that wakes them.

A waiting checkout holds its waitress thread (WSGI has no other way) on a ``threading.Event`` keyed by
its request id; at most ``:config: queue_waiters`` do so at once per worker. Each waiter adds one thread
to waitress's pool while it waits (``on_count``), so the other routes always keep their
``VMPOOLER_API_THREADS``; idle, the pool is that size (500 idle threads cost a quarter of the
throughput: docs/performance.md). One watcher thread per worker, started with the first waiter:

* listens on ``keys.QUEUE_CHANNEL`` and sets the event of each of its requests a dispatch served;
* every second, sets the event of a waiter whose client disconnected (waitress's
  ``waitress.client_disconnected``, with ``channel_request_lookahead`` on);
* every 2 s, reads the status of every waiter in one round trip (a message lost while the
  subscription reconnected costs at most that);
* every 2 s while it holds waiters, renews this worker's liveness key (``Queues.beat``, 6 s): a
  dispatch drops the waiting requests of a worker that stopped beating, and gives back the VMs of those
  it served that the worker never answered, so the waiters of a crashed worker keep no VM. A worker
  that stops gives its waiters' places and VMs back itself (``abandon``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import attrs

from vmpooler import keys
from vmpooler.errors import StoreError

__all__ = ["Waiter", "Waiters"]

log = logging.getLogger(__name__)

_DISCONNECT_EVERY = 1.0
_POLL_EVERY = 2.0
_BEAT_EVERY = 2.0  # the liveness key lives 6 s (Queues.beat)


@attrs.define
class Waiter:
    """One waiting request: its event, and how to tell whether its client has gone."""

    request_id: str
    event: threading.Event = attrs.Factory(threading.Event)
    disconnected: Callable[[], bool] | None = None
    gone: bool = False  # set by the watcher: the client disconnected

    def client_gone(self) -> bool:
        """Whether the client has disconnected, asked now (the watcher only looks every second)."""
        if not self.gone and self.disconnected is not None:
            try:
                self.gone = bool(self.disconnected())
            except Exception:  # waitress's check must never fail a request
                return False
        return self.gone


class Waiters:
    """The waiting requests of this worker and their watcher (see the module docstring).

    Args:
        store: the worker's store.
        capacity: the most requests that may wait at once.
        on_count: told the number of waiters whenever it changes (the worker resizes waitress's pool).
    """

    def __init__(self, store: Any, capacity: int, on_count: Callable[[int], None] | None = None) -> None:
        self.worker = uuid.uuid4().hex
        self.on_count = on_count
        self._store = store
        self._slots = threading.BoundedSemaphore(capacity)
        self._waiters: dict[str, Waiter] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self._waiters)

    def enter(self, request_id: str, disconnected: Callable[[], bool] | None) -> Waiter | None:
        """Register a waiter; None when this worker already holds ``capacity`` of them.

        Raises:
            ValueError: a request of that id already waits here.
        """
        if not self._slots.acquire(blocking=False):
            return None
        waiter = Waiter(request_id, disconnected=disconnected)
        with self._lock:
            if request_id in self._waiters:
                self._slots.release()
                raise ValueError(f"request id {request_id!r} is already in use")
            self._waiters[request_id] = waiter
            self._counted()
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True, name="queue-watcher")
                self._thread.start()
        return waiter

    def leave(self, waiter: Waiter) -> None:
        with self._lock:
            if self._waiters.get(waiter.request_id) is waiter:
                del self._waiters[waiter.request_id]
                self._counted()
        self._slots.release()

    def _counted(self) -> None:
        """(Under the lock.) Tell ``on_count`` how many wait now."""
        if self.on_count is not None:
            self.on_count(len(self._waiters))

    def ensure_alive(self) -> None:
        """Renew this worker's liveness key now (before its first enqueue)."""
        self._store.queue.beat(self.worker)

    def abandon(self, settings: Any, now: str) -> None:
        """This worker stops: every request still waiting here gives its place (or its VMs) back, and
        its liveness key goes, before the process ends and its clients are cut off."""
        with self._lock:
            waiting = list(self._waiters)
        for request_id in waiting:
            try:
                self._store.queue.cancel(request_id, settings, now=now, give_back=True)
            except StoreError as exc:
                log.warning("could not give back waiting request %s: %s", request_id, exc)
        try:
            self._store.queue.forget_worker(self.worker)
        except StoreError as exc:
            log.warning("could not drop this worker's liveness key: %s", exc)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the watcher (before the store's connections close under it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- the watcher -----------------------------------------------------------------------------------

    def _watch(self) -> None:
        pubsub: Any = None
        next_disconnect = next_poll = next_beat = 0.0
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self._store.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(keys.QUEUE_CHANNEL)
                message = pubsub.get_message(timeout=0.2)
                if message is not None and message.get("type") == "message":
                    self._wake(str(message["data"]).split(","))
            except Exception as exc:  # the watcher must outlive any Redis trouble
                if self._stop.is_set():
                    break
                log.warning("queue watcher: %s; resubscribing", exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # a broken connection may not close cleanly
                        pubsub.close()
                pubsub = None
                self._stop.wait(0.5)
            now = time.monotonic()
            if now >= next_disconnect:
                next_disconnect = now + _DISCONNECT_EVERY
                self._check_disconnects()
            if now >= next_poll:
                next_poll = now + _POLL_EVERY
                self._poll()
            if now >= next_beat:
                next_beat = now + _BEAT_EVERY
                self._beat()
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _wake(self, request_ids: list[str]) -> None:
        with self._lock:
            found = [self._waiters.get(request_id) for request_id in request_ids]
        for waiter in found:
            if waiter is not None:
                waiter.event.set()

    def _check_disconnects(self) -> None:
        with self._lock:
            waiters = list(self._waiters.values())
        for waiter in waiters:
            try:
                gone = waiter.disconnected is not None and waiter.disconnected()
            except Exception:
                gone = False
            if gone:
                waiter.gone = True
                waiter.event.set()

    def _poll(self) -> None:
        with self._lock:
            ids = list(self._waiters)
        if not ids:
            return
        try:
            served = self._store.queue.served(ids)
        except StoreError as exc:
            log.warning("queue watcher: could not read the waiting requests: %s", exc)
            return
        self._wake(list(served))

    def _beat(self) -> None:
        if not self._waiters:  # nothing of ours waits in Redis: no key to keep alive (ensure_alive
            return  # renews it before the next request is recorded)
        try:
            self._store.queue.beat(self.worker)
        except StoreError as exc:
            log.warning("queue watcher: could not renew this worker's liveness: %s", exc)
