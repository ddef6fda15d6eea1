"""An API worker process: waitress serving ``create_app`` on a listening socket shared by all workers.

SIGTERM (a stop, or SIGHUP's one-at-a-time replacement) drains the worker instead of cutting it off: it
stops accepting (the other workers, sharing the socket, take the new connections), answers the next
request of every connection with ``Connection: close``, closes the connections that stay idle, and exits
when its last connection is closed, or after ``DRAIN_SECONDS``. So a rolling restart fails no request
that had been read.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import waitress
from waitress.channel import HTTPChannel
from waitress.task import WSGITask
from waitress.wasyncore import loop

from vmpooler import metrics, nogil
from vmpooler.config import Config, load_config
from vmpooler.config.env import env_value
from vmpooler.errors import StoreError
from vmpooler.http.app import create_app
from vmpooler.http.balance import ConnectionBoard, balance_accepts
from vmpooler.http.waiting import Waiters
from vmpooler.log import setup_logging
from vmpooler.store import Store
from vmpooler.store.queue import QueueSettings
from vmpooler.timeutil import format_time

if TYPE_CHECKING:
    from vmpooler.supervisor import Heartbeat

__all__ = [
    "API_THREADS",
    "DRAIN_SECONDS",
    "ApiWorkerArgs",
    "WorkerChannel",
    "WorkerTask",
    "drain",
    "listen",
    "quick_trigger",
    "run_api_worker",
    "with_published_pools",
]

log = logging.getLogger(__name__)

_WAIT_WARN_EVERY = 10.0  # seconds between the warnings of a worker waiting for published pools
API_THREADS = 4  # each worker's waitress threads unless VMPOOLER_API_THREADS says (docs/performance.md)
DRAIN_SECONDS = 8.0  # the most a stopping worker waits for its requests (the supervisor kills at 10)
_IDLE_CLOSE = 2.0  # seconds without traffic after which a draining worker closes a keep-alive connection
_STOP_CHECK = 0.2  # the longest a serving worker's loop waits before it looks whether it must stop


class WorkerTask(WSGITask):
    """A request's task as an API worker runs it: its header and a whole body leave in one send, made
    at once from the task's thread with the GIL held when nothing else waits to go out; once
    its worker drains, it answers with ``Connection: close`` (waitress forbids the application that
    hop-by-hop header, so the task adds it) and closes the connection after the response: the client's
    next request goes to another worker."""

    draining = threading.Event()  # one server per process: set by ``drain``
    wrote_header: bool  # waitress's, set as it writes the header

    def build_response_header(self) -> bytes:
        if self.draining.is_set():
            self.set_close_on_finish()
        return bytes(super().build_response_header())

    def write(self, data: bytes) -> None:
        """A whole body written at once goes out with its header in one ``write_soon``: waitress
        sends each ``write_soon`` at once, so a header and body written apart left as two segments,
        two system calls here and two wake-ups of the client."""
        if (
            not self.wrote_header
            and self.complete
            and data
            and self.content_length == len(data)
            and self.has_body
        ):
            header = self.build_response_header()
            self.wrote_header = True
            self.content_bytes_written = len(data)
            self._send_whole(header + data)
            return
        super().write(data)

    def _send_whole(self, response: bytes) -> None:
        """Send ``response`` now, with the GIL held, when nothing else waits to go out on the
        connection (``vmpooler.nogil``: a non-blocking send that never hands the GIL over); what does
        not leave at once (a full send buffer, an error) goes through waitress's ``write_soon``."""
        channel = self.channel
        with channel.outbuf_lock:  # the I/O thread flushes the buffers under it
            if channel.connected and not channel.total_outbufs_len:
                sent = nogil.send_some(channel.socket.fileno(), response)
                if sent == len(response):
                    channel.last_activity = time.time()
                    return
                response = response[sent:]
        channel.write_soon(response)


class WorkerChannel(HTTPChannel):
    """waitress's connection, running each request as a :class:`WorkerTask`; it reads what the
    I/O loop found waiting with the GIL held (``vmpooler.nogil``: a non-blocking receive), so the
    I/O thread does not hand the GIL to a task thread and queue to get it back for every request."""

    task_class = WorkerTask
    _inbuf: Any = None

    def recv(self, buffer_size: int) -> bytes:
        recv_now = nogil.recv_now
        if recv_now is not None:
            if self._inbuf is None or len(self._inbuf) < buffer_size:
                self._inbuf = ctypes.create_string_buffer(buffer_size)
            got = recv_now(self.socket.fileno(), self._inbuf, buffer_size, nogil.RECV_FLAGS)
            if got > 0:
                return ctypes.string_at(self._inbuf, got)
        # nothing read: an end of file, an error or no C library, which waitress's own handles
        return bytes(super().recv(buffer_size))


def quick_trigger(server: Any) -> None:
    """Make waitress's trigger (the pipe a task thread writes to wake the I/O loop, once at the end of
    every request) a non-blocking write with the GIL held (``vmpooler.nogil``). A full pipe already
    wakes the loop, so a write that finds it full is dropped."""
    write_now = nogil.write_now
    trigger: Any = getattr(server, "trigger", None)
    fd = getattr(trigger, "trigger", None)
    if write_now is None or not isinstance(fd, int):  # not waitress's pipe trigger: left as it is
        return
    os.set_blocking(fd, False)
    trigger._physical_pull = lambda: write_now(fd, b"x", 1)


def _connections(channels: dict[int, Any]) -> list[HTTPChannel]:
    """The client connections in waitress's socket map (beside the listener and its trigger)."""
    return [channel for channel in channels.values() if isinstance(channel, HTTPChannel)]


def drain(
    server: Any, channels: dict[int, Any], seconds: float, board: ConnectionBoard | None = None
) -> None:
    """Stop accepting, let the connections finish (see the module's doc), return within ``seconds``.

    A connection in use gets ``Connection: close`` with its next response. One idle for
    ``_IDLE_CLOSE`` seconds is closed: its client is not in the middle of a request (a client sending
    just as the connection closes is the race every HTTP server has; the longer the idle time, the
    rarer)."""
    WorkerTask.draining.set()
    if board is not None:
        board.leave()
    server.accepting = False
    server.del_channel()  # this process stops accepting; the socket stays open for the other workers
    log.info("draining %d connection(s)", len(_connections(channels)))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        open_channels = _connections(channels)
        if not open_channels:
            break
        idle_since = time.time() - _IDLE_CLOSE
        for channel in open_channels:
            busy = channel.requests or channel.request is not None or channel.total_outbufs_len
            if not busy and channel.last_activity < idle_since:
                channel.will_close = True
        loop(timeout=0.05, map=channels, use_poll=True, count=1)
    left = len(_connections(channels))
    if left:
        log.warning("drained for %.0f s: closing %d connection(s) still open", seconds, left)
    server.task_dispatcher.shutdown()


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Bind the listening socket once, in the supervisor; the workers inherit it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class ApiWorkerArgs:
    """What an API worker needs, picklable for a spawned process."""

    def __init__(
        self,
        config_path: str | None,
        config_env: dict[str, str],
        redis_url: str,
        sock: socket.socket,
        threads: int | None = None,
        board: tuple[str, int, int] | None = None,
    ) -> None:
        self.config_path = config_path
        self.config_env = config_env
        self.redis_url = redis_url
        self.sock = sock
        self.board = board  # the connection board's path, this worker's slot, the slots (http/balance.py)
        if threads is None:
            threads = env_value("VMPOOLER_API_THREADS", API_THREADS, minimum=1)
        self.threads = threads


def _stop_on_signal() -> threading.Event:
    """SIGTERM and SIGUSR2 (a stop, a SIGHUP replacement) set the returned event instead of raising
    ``SystemExit`` as the supervisor's handlers do before the worker serves: raised wherever the main
    thread was, inside waitress's reading of a request, it lost that request (read from the socket, not
    yet queued) and its client was cut off when the drain closed the idle-looking connection. The
    serving loop looks at the event between its passes (each waits at most ``_STOP_CHECK``)."""
    stopping = threading.Event()

    def stop(*_: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once, as vmpooler.supervisor._terminate
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR2, stop)
    return stopping


def _beat(heartbeat: Heartbeat, stop: threading.Event) -> None:
    while not stop.wait(1.0):
        heartbeat.beat()


def with_published_pools(
    config: Config, store: Store, heartbeat: Heartbeat | Any = None, *, interval: float = 1.0
) -> Config:
    """``config`` with the pools a manager published in Redis, for a config without ``:pools:``.

    Until a manager has published some (or while Redis cannot be reached), tries again every
    ``interval`` seconds, warns every 10 s and beats the heartbeat; SIGTERM ends the wait as it ends
    the worker. A published pool with a bad value is left out, with a warning.
    """
    warned_at = -_WAIT_WARN_EVERY
    while True:
        try:
            published, reason = store.pools.published(), "none published in redis yet"
        except StoreError as exc:
            published, reason = {}, str(exc)  # "redis unavailable: ..."
        if published:
            served = config.with_published_pools(published)
            for warning in served.warnings[len(config.warnings) :]:
                log.warning("published pools: %s", warning)
            names = ", ".join(pool.name for pool in served.pools) or "none valid"
            log.info("serving the %d pool(s) published in redis: %s", len(served.pools), names)
            return served
        if time.monotonic() - warned_at >= _WAIT_WARN_EVERY:
            log.warning("no :pools: in the config and %s; waiting", reason)
            warned_at = time.monotonic()
        if heartbeat is not None:
            heartbeat.beat()
        time.sleep(interval)


def run_api_worker(args: ApiWorkerArgs, heartbeat: Heartbeat | Any = None) -> None:
    """The API child's main: load config, open Redis, serve until SIGTERM.

    A config without ``:pools:`` serves the pools a manager published in Redis, read once at start
    (SIGHUP restarts the workers, which read them again); the worker waits until there are some.
    """
    # waitress hands each request between its I/O thread and a worker thread; with CPython's default
    # 5 ms GIL switch interval, concurrent connections wait out whole intervals (p90 6 ms at two
    # clients). A short interval keeps the hand-over prompt (see docs/performance.md).
    sys.setswitchinterval(float(env_value("VMPOOLER_SWITCH_INTERVAL", 0.0005, minimum=0.000001)))
    config = load_config(args.config_path, env=args.config_env)
    setup_logging(logfile=config.globals.logfile)
    metrics.configure_sink(config)
    metrics.defer_updates()  # the request path's counters and histograms, written in sums
    waiters = config.globals.queue_waiters  # each waiting checkout holds a thread (vmpooler.http.waiting)
    store = Store.from_url(
        args.redis_url,
        max_connections=max(args.threads + 2, config.redis.connection_pool_size) + 2,  # + the queue watcher
        socket_timeout=config.redis.api_timeout,
        lean=True,
    )
    if not config.pools_given:
        config = with_published_pools(config, store, heartbeat)
    waiting = Waiters(store, waiters)
    app = create_app(config, store, waiters=waiting)
    app_settings = QueueSettings.from_config(config)
    channels: dict[int, Any] = {}  # waitress's socket map: the listener, its trigger, the connections
    server = waitress.create_server(
        app,
        map=channels,
        sockets=[args.sock],
        threads=args.threads,
        ident="vmpooler",
        connection_limit=1000 + waiters,
        # lets a waiting checkout see its client disconnect (environ["waitress.client_disconnected"])
        channel_request_lookahead=1,
        channel_timeout=60,
        # Bodies up to 4x the limit reach BodyLimit (a JSON 413); waitress refuses larger ones itself,
        # without reading them, with a plain-text 413 (its error pages cannot be JSON).
        max_request_body_size=4 * config.globals.max_request_body,
    )
    server.channel_class = WorkerChannel
    quick_trigger(server)
    board = None if args.board is None else ConnectionBoard(*args.board)
    if board is not None:
        balance_accepts(server, channels, board)
    # each waiting checkout holds a thread: one more while it waits, so the other routes keep theirs
    dispatcher = server.task_dispatcher
    waiting.on_count = lambda count: dispatcher.set_thread_count(args.threads + count)
    stop = threading.Event()
    if heartbeat is not None:
        heartbeat.beat()
        threading.Thread(target=_beat, args=(heartbeat, stop), daemon=True, name="heartbeat").start()
    log.info("API worker serving on %s", args.sock.getsockname())
    stopping = _stop_on_signal()
    try:
        timeout = min(server.adj.asyncore_loop_timeout, _STOP_CHECK)
        while not stopping.is_set():
            loop(timeout=timeout, map=channels, use_poll=server.adj.asyncore_use_poll, count=1)
        drain(server, channels, DRAIN_SECONDS, board)
    finally:
        stop.set()
        server.close()
        waiting.abandon(app_settings, format_time(time.time()))  # its clients are about to be cut off
        waiting.stop()  # before the store's connections close under its watcher
        store.close()
        metrics.stop_deferring()  # the last requests' counts, written before the process exits
        if board is not None:
            board.close()
