"""Rate limit counters: one per limit class and client, shared by every API process.

``vmpooler__ratelimit__<class>__<client>`` counts the client's requests of that class in a fixed window
that starts with its first request and lasts the class's period (the key's expiry). Counting and reading
the window's end are one script, so one round trip per request, and no two processes can both see the
last free place.

Every request of a rate-limited API pays that round trip, so it is made as cheaply as redis-py allows:
on a connection of the calling thread's own, outside the client's pool. Checking a connection out of
redis-py's pool and back costs more CPU than the script's whole round trip (docs/performance.md, "Rate
limiting cost"). These connections, one per API thread, are made by the pool, so closing the store
closes them too.
"""

from __future__ import annotations

import threading
from typing import Any

import redis as redis_lib

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["RateLimits"]

# KEYS: the counter. ARGV: period (s) -> {requests in the window, this one included; ms until it ends}.
# The expiry is set by the window's first request (or on a counter that has none, whoever made it).
_HIT = """
local count = redis.call('INCR', KEYS[1])
local ttl = -1
if count > 1 then ttl = redis.call('PTTL', KEYS[1]) end
if ttl < 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1]) * 1000
end
return {count, ttl}
"""


class RateLimits:
    """Count requests against the API's rate limits (``http.ratelimit``)."""

    def __init__(self, client: Any) -> None:
        self._pool: Any = client.connection_pool
        self._sha = client.register_script(_HIT).sha
        self._own = threading.local()

    @translated
    def hit(self, kind: str, client: str, period: int) -> tuple[int, int]:
        """Count one request of ``client`` in limit class ``kind``.

        Args:
            kind: the limit class (``vm_creation``, ``vm_deletion``, ``authenticated``,
                ``global_per_ip``).
            client: ``token:<token>`` or ``ip:<address>``.
            period: the class's window, in seconds; a new window starts when the last one ended.

        Returns:
            ``(count, ms_left)``: the requests counted in the current window, this one included, and
            the milliseconds until the window ends.
        """
        key = keys.ratelimit(kind, client)
        try:
            count, ms_left = self._call("EVALSHA", self._sha, 1, key, period)
        except redis_lib.exceptions.NoScriptError:  # a new or flushed Redis: EVAL caches the script
            count, ms_left = self._call("EVAL", _HIT, 1, key, period)
        return int(count), int(ms_left)

    def _call(self, *command: object) -> Any:
        connection = getattr(self._own, "connection", None)
        if connection is None:
            connection = self._own.connection = self._pool.make_connection()
        try:
            connection.send_command(*command)
            return connection.read_response()
        except redis_lib.ResponseError:
            raise  # an error reply: the connection is in step
        except BaseException:
            connection.disconnect()  # maybe half a reply read: the next call reconnects
            raise
