"""The statsd and graphite sinks: where a process's metrics go besides Prometheus (reference §2.8, §6.1).

The original sends its metrics to exactly one sink, ``:statsd:`` before ``:graphite:`` before
``:prometheus:`` (``MetricsConfig.kind`` makes that choice). We always serve Prometheus at
``/prometheus``; a ``:statsd:`` or ``:graphite:`` section adds that sink beside it. Every process (API
worker, provider process) opens its own sink once at start (``metrics.configure_sink``), and
:mod:`vmpooler.metrics` sends each update of a metric with a §6.1 name to it.

A sink never blocks and never raises into the code that updates a metric: :meth:`Sink.send` formats
one line and appends it to a bounded in-memory buffer (no lock, no system call, no thread wake-up); a
daemon thread of the sink writes the buffer every 0.1 s. When the buffer is full, new lines are
dropped. Drops are counted and logged at most once a minute per sink.

* :class:`StatsdSink`: UDP, ``<prefix>.<name>:<value>|<c|g|ms>``, as many lines per datagram as fit in
  1432 bytes (statsd reads newline-separated lines), from a non-blocking socket; a datagram the kernel
  refuses is dropped. A server name that does not resolve is looked up again every 30 s.
* :class:`GraphiteSink`: TCP plaintext, ``<prefix>.<name> <value> <epoch>``, over one connection,
  reconnecting with back-off (1 s doubling to 30 s); while the server is down, lines wait in the buffer.

Batching is what makes the sink cheap: a loopback ``sendto`` costs 5-15 µs of system time (it delivers
the datagram and wakes the receiver), several times the cost of the update itself; once per datagram of
~25 lines it is nothing (docs/performance.md, "Metrics sink cost").
"""

from __future__ import annotations

import collections
import logging
import math
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vmpooler.config.sinks import MetricsConfig

__all__ = [
    "COUNTER",
    "GAUGE",
    "TIMING",
    "GraphiteSink",
    "Sink",
    "StatsdSink",
    "format_value",
    "make_sink",
]

log = logging.getLogger(__name__)

COUNTER, GAUGE, TIMING = "c", "g", "ms"  # the statsd types; graphite only writes the value

_DROP_LOG_INTERVAL = 60.0  # seconds between two warnings about dropped metrics


def format_value(value: float) -> str:
    """A metric value as the wire formats take it: integers without a point, other numbers with at most
    three decimals (milliseconds of a duration in seconds).

    Raises:
        ValueError: for NaN and infinities, which neither statsd nor graphite accepts.
    """
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    if value.is_integer():
        return str(int(value))
    return repr(round(value, 3))


class Sink(ABC):
    """Where one process's metric updates go; used from any thread."""

    @abstractmethod
    def send(self, name: str, value: float, kind: str) -> None:
        """Send one update of ``<prefix>.<name>``; called on the updating thread, on every update.

        Must return at once and never raise: a metric that cannot be sent is dropped (and counted).

        Args:
            name: the dotted name without the prefix (``checkout.success.debian-7-x86_64``).
            value: the increment, gauge value or duration.
            kind: :data:`COUNTER`, :data:`GAUGE` or :data:`TIMING`.
        """

    @abstractmethod
    def close(self) -> None:
        """Stop sending; called when another sink replaces this one (tests) or the process ends."""


class _BufferedSink(Sink):
    """A bounded buffer of lines that a daemon thread writes out every ``interval`` seconds.

    Args:
        describe: what the log calls the sink (``statsd host:port``).
        capacity: lines waiting at most; more are dropped.
        interval: seconds between two writes of the buffer.
    """

    def __init__(self, describe: str, *, capacity: int, interval: float) -> None:
        self._describe = describe
        self._capacity = capacity
        self._interval = interval
        self._lines: collections.deque[str] = collections.deque()  # append and popleft are atomic
        self._dropped = 0
        self._warned_at = -_DROP_LOG_INTERVAL
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{type(self).__name__}-writer", daemon=True)
        self._thread.start()

    @abstractmethod
    def _write(self) -> None:
        """Write what is buffered (:meth:`_take`); runs on the sink's thread only, every ``interval``."""

    def close(self, timeout: float = 2.0) -> None:
        """Write what is buffered (``timeout`` seconds at most), then stop; the sink drops from then on."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def dropped(self) -> int:
        """Updates dropped so far."""
        return self._dropped

    def _queue(self, line: str) -> None:
        if self._stop.is_set():
            self._drop("the sink is closed")
        elif len(self._lines) >= self._capacity:
            self._drop(f"{self._capacity} lines wait to be written")
        else:
            self._lines.append(line)

    def _take(self, limit: int) -> list[str]:
        lines: list[str] = []
        while len(lines) < limit:
            try:
                lines.append(self._lines.popleft())
            except IndexError:
                break
        return lines

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._write_safely()
        self._write_safely()  # what was sent before close

    def _write_safely(self) -> None:
        try:
            self._write()
        except Exception:  # a bug here must not end the thread: the buffer would fill and drop forever
            log.exception("writing metrics to %s failed", self._describe)

    def _drop(self, reason: object, count: int = 1) -> None:
        self._dropped += count  # a lost increment under a race only makes the count approximate
        now = time.monotonic()
        if now - self._warned_at >= _DROP_LOG_INTERVAL:
            self._warned_at = now
            log.warning("metrics to %s dropped (%d so far): %s", self._describe, self._dropped, reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._describe}>"


class StatsdSink(_BufferedSink):
    """UDP statsd, fire-and-forget.

    Args:
        server: host name or address, looked up at start; when it does not resolve, updates are
            dropped and the sink's thread looks it up again every 30 s.
        port: the UDP port.
        prefix: the first segment of every name.
        capacity: lines waiting at most.
        interval: seconds between two writes.
        max_datagram: bytes per datagram at most (a line longer than that goes alone).
        resolve: ``socket.getaddrinfo`` (tests pass one that fails).
    """

    RESOLVE_RETRY = 30.0

    def __init__(
        self,
        server: str,
        port: int,
        prefix: str,
        *,
        capacity: int = 100_000,
        interval: float = 0.1,
        max_datagram: int = 1432,
        resolve: Callable[..., Any] = socket.getaddrinfo,
    ) -> None:
        self._address = (server, port)
        self._prefix = f"{prefix}." if prefix else ""
        self._max_datagram = max_datagram
        self._resolve = resolve
        self._sock: socket.socket | None = None
        self._lookup = threading.Lock()
        self._next_lookup = 0.0
        super().__init__(f"statsd {server}:{port}", capacity=capacity, interval=interval)
        self._open()  # at once, so that the first updates are not dropped

    def send(self, name: str, value: float, kind: str) -> None:
        if self._sock is None:
            self._drop("no socket: the server did not resolve, or the sink is closed")
            return
        try:
            self._queue(f"{self._prefix}{name}:{format_value(value)}|{kind}")
        except Exception as exc:  # a value the wire cannot carry
            self._drop(exc)

    def _open(self) -> None:
        """Look the server up and connect the socket: at start, then from the writer every 30 s until
        it works."""
        if time.monotonic() < self._next_lookup or not self._lookup.acquire(blocking=False):
            return
        try:
            if self._sock is None and not self._stop.is_set():
                self._sock = self._connect()
        finally:
            self._lookup.release()

    def _connect(self) -> socket.socket | None:
        try:
            family, kind, proto, _, address = self._resolve(*self._address, type=socket.SOCK_DGRAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            sock.connect(address)  # a connected UDP socket: no lookup or address per datagram
        except OSError as exc:
            self._next_lookup = time.monotonic() + self.RESOLVE_RETRY
            log.warning("statsd server %s:%d: %s; metrics are dropped until it resolves", *self._address, exc)
            return None
        return sock

    def _write(self) -> None:
        if self._sock is None:
            self._open()
        sock = self._sock
        while sock is not None:
            lines = self._datagram()
            if not lines:
                break
            try:
                sock.send("\n".join(lines).encode())
            except OSError as exc:  # a full buffer, an ICMP refusal of an earlier datagram, too long
                self._drop(exc, len(lines))
        if self._stop.is_set() and sock is not None:
            self._sock = None
            sock.close()

    def _datagram(self) -> list[str]:
        """Lines from the buffer that fit in one datagram together."""
        lines: list[str] = []
        size = 0
        while True:
            try:
                line = self._lines[0]
            except IndexError:
                return lines
            size += len(line) + 1
            if lines and size > self._max_datagram:
                return lines
            lines.append(self._lines.popleft())


class GraphiteSink(_BufferedSink):
    """Graphite's plaintext protocol over TCP.

    Args:
        server: host name or address of carbon's plaintext listener.
        port: its TCP port.
        prefix: the first segment of every name.
        capacity: lines waiting at most (while the server is down); more are dropped.
        interval: seconds between two writes.
        timeout: seconds a connect or a write may take before the connection counts as lost.
        clock: the wall clock the lines are stamped with when sent (tests pass a fixed one).
    """

    BACKOFF_MIN, BACKOFF_MAX = 1.0, 30.0
    _BATCH = 1000  # lines written with one sendall at most

    def __init__(
        self,
        server: str,
        port: int,
        prefix: str,
        *,
        capacity: int = 10_000,
        interval: float = 0.1,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._address = (server, port)
        self._prefix = f"{prefix}." if prefix else ""
        self._timeout = timeout
        self._clock = clock
        # The writer thread's state:
        self._conn: socket.socket | None = None
        self._pending: list[str] = []  # taken from the buffer, not written yet
        self._backoff = self.BACKOFF_MIN
        self._next_connect = 0.0
        self._down = False  # the server was lost and not reached since
        super().__init__(f"graphite {server}:{port}", capacity=capacity, interval=interval)

    def send(self, name: str, value: float, kind: str) -> None:
        try:
            self._queue(f"{self._prefix}{name} {format_value(value)} {int(self._clock())}\n")
        except Exception as exc:  # a value the wire cannot carry
            self._drop(exc)

    def _write(self) -> None:
        while self._pending or self._lines:
            conn = self._conn or self._connect()
            if conn is None:
                break  # the lines wait for the next attempt
            self._pending = self._pending or self._take(self._BATCH)
            try:
                conn.sendall("".join(self._pending).encode())
            except OSError as exc:
                self._lost(f"write failed ({exc})")
                conn.close()
                self._conn = None
                continue
            self._pending = []
        if self._stop.is_set() and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> socket.socket | None:
        """A new connection, unless the back-off after the last failure is still running."""
        if time.monotonic() < self._next_connect:
            return None
        try:
            self._conn = socket.create_connection(self._address, timeout=self._timeout)
        except OSError as exc:
            self._lost(f"unreachable ({exc}); retrying in {self._backoff:.0f} s")
            self._next_connect = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, self.BACKOFF_MAX)
            return None
        if self._down:
            log.info(
                "graphite server %s:%d reached again (%d lines dropped so far)", *self._address, self.dropped
            )
        self._down = False
        self._backoff = self.BACKOFF_MIN
        return self._conn

    def _lost(self, reason: str) -> None:
        """Warn once per outage; later attempts of the same outage log at debug level."""
        level = logging.DEBUG if self._down else logging.WARNING
        self._down = True
        log.log(
            level, "graphite server %s:%d %s; up to %d lines wait", *self._address, reason, self._capacity
        )


def make_sink(config: MetricsConfig) -> Sink | None:
    """The sink ``config`` chooses (``kind`` statsd or graphite), else None."""
    if config.kind == "statsd" and config.server:
        return StatsdSink(config.server, config.port or 8125, config.prefix)
    if config.kind == "graphite" and config.server:
        return GraphiteSink(config.server, config.port or 2003, config.prefix)
    return None
