"""A redis-py client whose plain commands skip redis-py's per-command layers (the API's hot path).

redis-py spends 80-140 µs of CPU on one command through a ``BlockingConnectionPool`` (the pool's lock
and queue, a readiness poll, retry and observability wrappers, its pure-Python packer) where the
``send``/``recv`` system calls and hiredis's parser need about 25 (``docs/performance.md``, "The API
against the ceiling of its stack"). ``LeanRedis`` is a ``redis.Redis`` whose ``execute_command`` sends
a command on a connection of its own: a socket taken from a lock-free stack (``list.pop`` and
``append`` are atomic), the command packed here, the reply parsed by ``hiredis.Reader`` and passed
through redis-py's own response callbacks, so every redis-py method (``hgetall``, ``evalsha``,
registered scripts and their ``NOSCRIPT`` reload) answers exactly as before; a registered script runs
as one ``EVALSHA`` without redis-py's ``Script`` checks. Pipelines, MULTI and
pub/sub keep redis-py's connection pool.

A connection is checked before each use (a non-blocking peek: an idle connection with something to read
was closed by Redis, e.g. by a restart, and is replaced, as redis-py's pool does); that check and a
command's send are made with the GIL held (:mod:`vmpooler.nogil`), only the wait for the reply releases it.
Any socket error or timeout closes the connection and raises redis-py's ``ConnectionError`` /
``TimeoutError``, which the store turns into ``StoreUnavailable``. ``redis://``, ``unix://`` and
``redis+sentinel://`` URLs take this path (TLS keeps redis-py's); behind Sentinel the primary's address
is asked of the sentinels at most once a second and after any failed command, and idle connections to an
address no longer the primary's are closed.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from typing import Any

import hiredis
import redis as redis_lib
import redis.sentinel

from vmpooler import nogil

__all__ = ["LeanRedis", "lean_capable"]

# the reply errors a caller may act on, by their first word (redis-py raises the same classes); LOADING
# (Redis loading its data) and READONLY (a replica since a failover) mean "reconnect"
_ERRORS: dict[str, type[redis_lib.RedisError]] = {
    "LOADING": redis_lib.BusyLoadingError,
    "NOSCRIPT": redis_lib.exceptions.NoScriptError,
    "READONLY": redis_lib.exceptions.ReadOnlyError,
    "EXECABORT": redis_lib.exceptions.ExecAbortError,
    "OOM": redis_lib.exceptions.OutOfMemoryError,
    "NOPERM": redis_lib.exceptions.NoPermissionError,
    "NOAUTH": redis_lib.exceptions.AuthenticationError,
    "WRONGPASS": redis_lib.exceptions.AuthenticationError,
}
_OPTIONS_OF_SLOW_PATH = {"NEVER_DECODE", "EMPTY_RESPONSE"}
_UNKNOWN = object()
_BUFFER = 65536
_RESOLVE_EVERY = 1.0
# how many forks made this process (0 in the process that imported this module): a client whose count
# differs was made before a fork and must not use its parent's sockets. Counted at the fork, so a
# command does not ask the kernel for the pid (``os.getpid`` is a system call).
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def lean_capable(pool: redis_lib.ConnectionPool) -> bool:
    """Whether ``pool`` connects in a way the lean path can: plain TCP or a unix socket."""
    return pool.connection_class in (
        redis_lib.Connection,
        redis_lib.UnixDomainSocketConnection,
        redis.sentinel.SentinelManagedConnection,
    )


def _reply_error(message: str) -> Exception:
    return _ERRORS.get(message.split(" ", 1)[0], redis_lib.ResponseError)(message)


def _kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Make ``sock`` blocking with its timeout kept by the kernel (``SO_RCVTIMEO``/``SO_SNDTIMEO``: a
    send or receive that runs out fails with ``EAGAIN``, i.e. ``BlockingIOError``).

    A Python socket with a timeout polls before every send and every receive: two system calls where one
    does, and under load each system call hands the GIL to another thread and waits to get it back.
    """
    sock.settimeout(None)
    if timeout:
        whole = int(timeout)
        interval = struct.pack("@ll", whole, min(999_999, round((timeout - whole) * 1_000_000)))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, interval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, interval)


class _Connection:
    """One socket to Redis and its reply parser; used by one thread at a time."""

    __slots__ = ("address", "buffer", "fd", "poller", "reader", "sock", "view")

    def __init__(self, kwargs: dict[str, Any], encoding: str | None, address: tuple[str, int] | None) -> None:
        self.address = address
        timeout = kwargs.get("socket_timeout")
        connect_timeout = kwargs.get("socket_connect_timeout") or timeout
        path = kwargs.get("path")
        try:
            if path:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(connect_timeout)
                sock.connect(path)
            else:
                where = address or (kwargs.get("host", "localhost"), kwargs.get("port", 6379))
                sock = socket.create_connection(where, connect_timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError as exc:
            raise redis_lib.TimeoutError(f"connecting to Redis: {exc}") from exc
        except OSError as exc:
            raise redis_lib.ConnectionError(f"connecting to Redis: {exc}") from exc
        _kernel_timeouts(sock, timeout)
        self.sock = sock
        self.fd = sock.fileno()
        options: dict[str, Any] = {"replyError": redis_lib.ResponseError}
        if encoding:
            options["encoding"] = encoding
        self.reader = hiredis.Reader(**options)
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.buffer = bytearray(_BUFFER)
        self.view = memoryview(self.buffer)
        try:
            password = kwargs.get("password")
            if password:
                username = kwargs.get("username")
                self._setup(("AUTH", username, password) if username else ("AUTH", password))
            if kwargs.get("db"):
                self._setup(("SELECT", str(kwargs["db"])))
        except BaseException:
            self.close()
            raise

    def _setup(self, command: tuple[str, ...]) -> None:
        reply = self.call(_pack(command, str))
        if isinstance(reply, redis_lib.ResponseError):
            raise _reply_error(str(reply))

    def stale(self) -> bool:
        """An idle connection with something to read was closed (or desynchronised) by Redis."""
        if nogil.recv_now is None:
            return bool(self.poller.poll(0))
        return nogil.idle_socket_readable(self.fd)  # without handing the GIL over

    def call(self, packed: bytes | bytearray) -> Any:
        """Send one packed command and return its reply; a reply error is returned, not raised."""
        try:
            sent = nogil.send_some(self.fd, packed)  # without handing the GIL over
            if sent != len(packed):  # a full send buffer, or an error the socket call raises
                self.sock.sendall(packed[sent:])
            reader = self.reader
            reply = reader.gets()
            while reply is False:
                n = self.sock.recv_into(self.buffer)
                if not n:
                    raise redis_lib.ConnectionError("Redis closed the connection")
                reader.feed(self.view, 0, n)  # type: ignore[arg-type]  # hiredis takes any buffer
                reply = reader.gets()
        except (TimeoutError, BlockingIOError) as exc:  # BlockingIOError: SO_RCVTIMEO/SO_SNDTIMEO ran out
            raise redis_lib.TimeoutError(f"Redis did not answer in time: {exc}") from exc
        except OSError as exc:
            raise redis_lib.ConnectionError(f"Redis connection lost: {exc}") from exc
        except hiredis.ProtocolError as exc:
            raise redis_lib.ConnectionError(f"Redis protocol error: {exc}") from exc
        return reply

    def close(self) -> None:
        self.sock.close()


# the wire form of short strings and integers seen before (key prefixes, script SHAs, counts...); when
# full it is emptied and learns again, so names seen once (VMs, claims, times) cannot crowd out the rest
_SEGMENTS: dict[str | int, bytes] = {}
_MAX_SEGMENTS = 4096
_MAX_SEGMENT_TEXT = 64  # longer strings (values, bodies) are packed afresh each time, never kept


def _pack(args: tuple[Any, ...], encode: Any) -> bytes:
    """RESP for one command: ``str`` as UTF-8, ``bytes`` as they are, ``int`` in decimal, the rest through
    ``encode`` (redis-py's encoder: floats by ``repr``; ``bool`` and ``None`` raise its ``DataError``)."""
    out = [b"*%d\r\n" % len(args)]
    segments = _SEGMENTS
    for arg in args:
        kind = type(arg)
        if kind is str or kind is int:  # never bool (a subclass) or float: 1.0 == 1 but packs as "1.0"
            segment = segments.get(arg)
            if segment is None:
                data = arg.encode() if kind is str else b"%d" % arg
                segment = b"$%d\r\n%b\r\n" % (len(data), data)
                if len(data) <= _MAX_SEGMENT_TEXT:
                    if len(segments) >= _MAX_SEGMENTS:
                        segments.clear()
                    segments[arg] = segment
        else:
            data = arg if kind is bytes else bytes(encode(arg))
            segment = b"$%d\r\n%b\r\n" % (len(data), data)
        out.append(segment)
    return b"".join(out)


class _LeanScript(redis_lib.commands.core.Script):
    """A registered script run straight as ``EVALSHA`` on the lean path (redis-py's ``Script`` first
    checks whether its client is a pipeline, a slow ``isinstance`` on a Protocol); inside a pipeline
    (``client=pipe``) it is redis-py's own."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if client is not None and client is not self.registered_client:
            return super().__call__(keys, args, client)
        keys = tuple(keys or ())
        command = ("EVALSHA", self.sha, len(keys), *keys, *(args or ()))
        execute = self.registered_client.execute_command
        try:
            return execute(*command)
        except redis_lib.exceptions.NoScriptError:  # a restarted or flushed Redis: load it, run it again
            self.sha = self.registered_client.script_load(self.script)
            return execute("EVALSHA", self.sha, *command[2:])


class LeanRedis(redis_lib.Redis):
    """``redis.Redis`` with plain commands sent on the lean path (see the module's docstring).

    Args:
        connection_pool: the pool redis-py uses for pipelines and pub/sub; its connection settings
            (host, port or path, password, db, timeouts, decoding) are the lean connections' too.
        max_idle: the most idle lean connections kept open; more are closed when returned.
    """

    def __init__(self, connection_pool: redis_lib.ConnectionPool, max_idle: int = 16) -> None:
        super().__init__(connection_pool=connection_pool)
        kwargs = dict(connection_pool.connection_kwargs)
        self._lean_kwargs = kwargs
        self._encoding = kwargs.get("encoding", "utf-8") if kwargs.get("decode_responses") else None
        self._idle: list[_Connection] = []
        self._max_idle = max_idle
        self._forks = _forks
        self._encode = self.get_encoder().encode
        self._callback_of: dict[str, Any] = {}  # see _callback
        # behind Sentinel: the primary's address, asked of the sentinels at most every _RESOLVE_EVERY s
        pool = connection_pool
        self._resolve = (
            pool.get_master_address if isinstance(pool, redis.sentinel.SentinelConnectionPool) else None
        )
        self._primary: tuple[str, int] | None = None
        self._resolved_at = -float("inf")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        if options and not _OPTIONS_OF_SLOW_PATH.isdisjoint(options):
            return super().execute_command(*args, **options)
        name = args[0]
        # redis-py names subcommands in one string ("SCRIPT LOAD"); on the wire they are two words
        packed = _pack(tuple(name.split()) + args[1:] if " " in name else args, self._encode)
        conn = self._take()
        try:
            reply = conn.call(packed)
        except BaseException:
            conn.close()
            self._resolved_at = -float("inf")  # behind Sentinel: ask for the primary again
            raise
        if isinstance(reply, redis_lib.ResponseError):
            error = _reply_error(str(reply))
            if isinstance(error, (redis_lib.BusyLoadingError, redis_lib.exceptions.ReadOnlyError)):
                conn.close()  # a restarted Redis loading, or a replica since a failover: reconnect next time
                self._resolved_at = -float("inf")
            else:
                self._give(conn)
            raise error
        self._give(conn)
        callback = self._callback_of.get(name, _UNKNOWN)
        if callback is _UNKNOWN:
            callback = self._callback(name)
        if callback is None:
            return reply
        options.pop("keys", None)
        return callback(reply, **options)

    def _callback(self, name: str) -> Any:
        """redis-py's reply callback of command ``name`` (None: the reply as it is), kept by the name as
        sent: ``response_callbacks`` is a ``CaseInsensitiveDict`` that folds case on every lookup."""
        callbacks = self.response_callbacks
        callback = callbacks[name] if name in callbacks else None  # noqa: SIM401 (its get() does not fold case)
        self._callback_of[name] = callback
        return callback

    def set_response_callback(self, command: str, callback: Any) -> None:
        super().set_response_callback(command, callback)
        self._callback_of = {}

    def register_script(self, script: Any) -> Any:
        return _LeanScript(self, script)

    def _take(self) -> _Connection:
        if self._forks != _forks:  # a forked child must not share its parent's sockets
            self._idle = []
            self._forks = _forks
        address = None
        if self._resolve is not None:
            now = time.monotonic()
            if now - self._resolved_at > _RESOLVE_EVERY:
                self._primary = self._resolve()  # MasterNotFoundError is a ConnectionError
                self._resolved_at = now
            address = self._primary
        idle = self._idle
        while idle:
            try:
                conn = idle.pop()
            except IndexError:
                break
            if conn.address == address and not conn.stale():
                return conn
            conn.close()
        return _Connection(self._lean_kwargs, self._encoding, address)

    def _give(self, conn: _Connection) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        super().close()
