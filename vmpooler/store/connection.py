"""What every part of the store shares: the client, the error translation, Redis's clock."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis as redis_lib

from vmpooler.errors import StoreError, StoreUnavailable

__all__ = ["RedisClock", "connect", "translated"]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_DISCONNECTED = (redis_lib.ConnectionError, redis_lib.TimeoutError, redis_lib.BusyLoadingError)


def connect(
    url: str, *, max_connections: int = 10, pool_timeout: float = 5.0, socket_timeout: float = 10.0
) -> redis_lib.Redis:
    """A client on a bounded, blocking connection pool, decoding replies to ``str``.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        max_connections: the most connections this process opens.
        pool_timeout: seconds a caller waits for a free connection before failing.
        socket_timeout: seconds to wait for one reply (the API uses ``:redis: api_timeout``).
    """
    pool = redis_lib.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=pool_timeout,
        decode_responses=True,
        socket_connect_timeout=min(2.0, socket_timeout * 4),
        socket_timeout=socket_timeout,
        health_check_interval=30,
    )
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
