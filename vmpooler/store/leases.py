"""Pool ownership when several managers share one Redis: the live managers of each provider instance,
and one lease per pool with a fencing token (docs/architecture.md, "Several managers").

All times are Redis's own (``TIME`` inside the scripts), so the hosts' clocks need not agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["Leases"]

_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

# KEYS: the provider's managers zset. ARGV: manager id, ttl ms -> the live members (this one included).
_BEAT = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

# KEYS: lease hashes..., the token counter. ARGV: owner, instance, pid, ttl ms -> per lease, its token
# when this process holds it now, else ''. A lease that is free, expired or this manager instance's is
# taken (renewed); a new holder, or a new process of the same instance, gets a new token.
_CLAIM = (
    _NOW
    + """
local counter = KEYS[#KEYS]
local out = {}
for i = 1, #KEYS - 1 do
  local l = redis.call('HMGET', KEYS[i], 'owner', 'instance', 'pid', 'token', 'expires')
  local mine = l[1] == ARGV[1] and l[2] == ARGV[2]
  if (not l[1]) or mine or (not l[5]) or tonumber(l[5]) <= now then
    local token = l[4]
    if (not mine) or l[3] ~= ARGV[3] or (not token) then
      token = redis.call('INCR', counter)
    end
    redis.call('HSET', KEYS[i], 'owner', ARGV[1], 'instance', ARGV[2], 'pid', ARGV[3],
      'token', token, 'expires', now + tonumber(ARGV[4]))
    out[i] = tostring(token)
  else
    out[i] = ''
  end
end
return out
"""
)

# KEYS: lease hashes. ARGV: owner, instance -> how many were this instance's (and are now free).
_RELEASE = """
local n = 0
for i = 1, #KEYS do
  local l = redis.call('HMGET', KEYS[i], 'owner', 'instance')
  if l[1] == ARGV[1] and l[2] == ARGV[2] then
    redis.call('DEL', KEYS[i])
    n = n + 1
  end
end
return n
"""


class Leases:
    """The managers' registry and the pools' leases."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._beat = client.register_script(_BEAT)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    @translated
    def beat(self, provider: str, manager: str, ttl_ms: int) -> list[str]:
        """Say ``manager`` serves ``provider`` for ``ttl_ms`` more; the live managers of ``provider``."""
        return list(self._beat(keys=[keys.managers(provider)], args=[manager, ttl_ms]))

    @translated
    def leave(self, provider: str, manager: str) -> None:
        """``manager`` stops serving ``provider`` (at a clean stop: the others take its pools at once)."""
        self._redis.zrem(keys.managers(provider), manager)

    @translated
    def claim(
        self, pools: Sequence[str], *, owner: str, instance: str, pid: int, ttl_ms: int
    ) -> dict[str, int | None]:
        """Take or renew the leases of ``pools`` for ``ttl_ms``: pool → its fencing token when this
        process holds the lease now, None when another manager does."""
        if not pools:
            return {}
        reply = self._claim(
            keys=[*(keys.lease(pool) for pool in pools), keys.LEASE_TOKEN],
            args=[owner, instance, pid, ttl_ms],
        )
        return {pool: int(token) if token else None for pool, token in zip(pools, reply, strict=True)}

    @translated
    def release(self, pools: Iterable[str], *, owner: str, instance: str) -> int:
        """Give up the leases of ``pools`` that this manager instance holds; how many it held."""
        names = [keys.lease(pool) for pool in pools]
        if not names:
            return 0
        return int(self._release(keys=names, args=[owner, instance]))

    @translated
    def holders(self, pools: Iterable[str]) -> dict[str, dict[str, str]]:
        """Each pool's lease as stored (empty when it has none): owner, instance, pid, token, expires."""
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                pipe.hgetall(keys.lease(pool))
            return dict(zip(names, pipe.execute(), strict=True))
