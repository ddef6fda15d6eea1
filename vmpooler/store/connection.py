"""What every part of the store shares: the client, the error translation, Redis's clock.

A URL names one Redis (``redis://``, ``rediss://``, ``unix://``) or a primary found through Redis
Sentinel: ``redis+sentinel://[user:password@]host:port[,host:port...]/<master name>[/<db>]
[?sentinel_password=...]`` (``RedisConfig.client_url`` writes it from ``:redis: sentinels``). A sentinel
client asks the sentinels for the primary's address whenever it connects, so after a failover every
process reaches the new primary by itself; a connection to a demoted primary is dropped on its first
``READONLY`` reply.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis as redis_lib
import redis.sentinel

from vmpooler.errors import Fenced, StoreError, StoreUnavailable
from vmpooler.store.fencing import FENCED
from vmpooler.store.lean import LeanRedis, lean_capable

__all__ = ["SENTINEL_SCHEME", "RedisClock", "connect", "parse_sentinel_url", "translated"]

SENTINEL_SCHEME = "redis+sentinel://"

_P = ParamSpec("_P")
_R = TypeVar("_R")

# ReadOnlyError: a primary demoted by a failover still answering on an old connection (reconnect)
_DISCONNECTED = (
    redis_lib.ConnectionError,
    redis_lib.TimeoutError,
    redis_lib.BusyLoadingError,
    redis_lib.exceptions.ReadOnlyError,
)

# replies of a primary that refuses writes until its replicas are back (min-replicas-to-write), or of a
# replica cut off from its primary: the service is unavailable for now, not broken
_REFUSED_FOR_NOW = ("NOREPLICAS", "MASTERDOWN")


class _SentinelBlockingPool(redis.sentinel.SentinelConnectionPool, redis_lib.BlockingConnectionPool):
    """redis-py's sentinel pool (connections to the primary the sentinels name) with the bounded,
    blocking behaviour of ``BlockingConnectionPool`` that every other store client has."""


def parse_sentinel_url(url: str) -> dict[str, Any]:
    """The parts of a ``redis+sentinel://`` URL: ``sentinels`` [(host, port)], ``master_name``, ``db``,
    ``username``, ``password`` (of the primary), ``sentinel_password``.

    Raises:
        ValueError: the URL names no sentinel or no master name, or a port is not a number.
    """
    parts = urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    username, _, password = auth.partition(":")
    sentinels: list[tuple[str, int]] = []
    for each in filter(None, hosts.split(",")):
        host, _, port = each.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a sentinel must be host:port, got {each!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [unquote(piece) for piece in parts.path.split("/") if piece]
    if not sentinels or not path:
        raise ValueError("a redis+sentinel:// URL names its sentinels and then /<master name>[/<db>]")
    if len(path) > 1 and not path[1].isdigit():
        raise ValueError(f"the db of a redis+sentinel:// URL must be a number, got {path[1]!r}")
    query = parse_qs(parts.query)
    return {
        "sentinels": sentinels,
        "master_name": path[0],
        "db": int(path[1]) if len(path) > 1 else 0,
        "username": unquote(username) or None,
        "password": unquote(password) if auth and ":" in auth else None,
        "sentinel_password": query["sentinel_password"][0] if "sentinel_password" in query else None,
    }


def _sentinel_pool(url: str, **options: Any) -> redis_lib.ConnectionPool:
    parts = parse_sentinel_url(url)
    timeouts = {k: options[k] for k in ("socket_timeout", "socket_connect_timeout")}
    manager = redis.sentinel.Sentinel(
        parts["sentinels"], sentinel_kwargs={"password": parts["sentinel_password"], **timeouts}
    )
    return _SentinelBlockingPool(
        parts["master_name"],
        manager,
        db=parts["db"],
        username=parts["username"],
        password=parts["password"],
        **options,
    )


def connect(
    url: str,
    *,
    max_connections: int = 10,
    pool_timeout: float = 5.0,
    socket_timeout: float = 10.0,
    lean: bool = False,
) -> redis_lib.Redis:
    """A client on a bounded, blocking connection pool, decoding replies to ``str``.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        max_connections: the most connections this process opens.
        pool_timeout: seconds a caller waits for a free connection before failing.
        socket_timeout: seconds to wait for one reply (the API uses ``:redis: api_timeout``).
        lean: send plain commands on ``LeanRedis``'s own connections (the API's hot path), where the
            URL allows it; pipelines and pub/sub use the pool either way.
    """
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": pool_timeout,
        "decode_responses": True,
        "socket_connect_timeout": min(2.0, socket_timeout * 4),
        "socket_timeout": socket_timeout,
        "health_check_interval": 30,
        # RESP2 on every connection: the lean path parses RESP2, and the replies' Python shapes then
        # come from one set of redis-py callbacks whichever path a command took
        "protocol": 2,
    }
    if url.startswith(SENTINEL_SCHEME):
        pool = _sentinel_pool(url, **options)
    else:
        pool = redis_lib.BlockingConnectionPool.from_url(url, **options)
    if lean and lean_capable(pool):
        return LeanRedis(connection_pool=pool, max_idle=max_connections)
    return redis_lib.Redis(connection_pool=pool)


def translated(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn redis-py's errors into ``StoreUnavailable`` (no connection) or ``StoreError`` (the rest).

    Every public method of a store part wears it, so callers only ever see ``vmpooler.errors``.
    """

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except _DISCONNECTED as exc:
            raise StoreUnavailable(f"redis unavailable: {exc}") from exc
        except redis_lib.ResponseError as exc:
            message = str(exc)
            if message.startswith(_REFUSED_FOR_NOW):
                raise StoreUnavailable(f"redis unavailable: {message}") from exc
            if message.startswith(FENCED):
                raise Fenced(message) from exc
            raise StoreError(f"redis error: {message}") from exc
        except redis_lib.RedisError as exc:
            raise StoreError(f"redis error: {exc}") from exc

    return wrapper


class RedisClock:
    """Redis's clock as seen from here: the offset of ``TIME`` to ``time.time()``, sampled every minute.

    A checkout carries a deadline in Redis's own time, so the hosts' clocks need not agree.
    """

    _EVERY = 60.0

    def __init__(self) -> None:
        self._offset_ms = 0.0
        self._error_ms = 0.0  # how wrong the offset can be: the round trip of its sample
        self._sampled = -float("inf")
        self._lock = threading.Lock()

    def deadline_ms(self, client: Any, timeout: float) -> int:
        """Redis time, in ms, after which a script sent now must not act: now + ``timeout``, less the
        offset's possible error, so that Redis never acts on a request its client may have given up."""
        now = time.monotonic()
        if now - self._sampled > self._EVERY:
            with self._lock:
                if now - self._sampled > self._EVERY:
                    before = time.time()
                    seconds, micros = client.time()
                    after = time.time()
                    self._offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500
                    self._error_ms = (after - before) * 1000
                    # a slow sample (a busy host) is taken again at the next checkout, not in a minute
                    self._sampled = now if self._error_ms < timeout * 250 else -float("inf")
        return int(time.time() * 1000 + self._offset_ms + timeout * 1000 - self._error_ms)
