"""Lua functions that several transition scripts share.

``WRITE_OTHERS``: writes to other hashes that a transition makes in the same step (the boot stats and
``lastboot`` of a VM becoming ready). A script that takes them ends its ARGV with ``(key index, field,
value)`` triples, the keys appended to its KEYS by :func:`append_writes`, and calls
``write_others(<first ARGV index of the triples>)``.

``HAND_OUT``: ready → running for an owner, as both the immediate checkout and the queue's dispatch do.
``RELEASE_TENANT``: the tenant's count of running VMs goes down once when a VM leaves running (return,
expiry, destroy, an undone checkout); ``keys.TENANT_HELD`` (VM → tenant) says whether it is still counted.
``TAKE_BACK`` (with ``RELEASE_TENANT``): ``HAND_OUT`` undone, running → ready, for a checkout whose client
never got the answer (a late reply, a waiting client gone).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["HAND_OUT", "RELEASE_TENANT", "TAKE_BACK", "WRITE_OTHERS", "append_writes"]

WRITE_OTHERS = """
local function write_others(first)
  local i = first
  while i <= #ARGV do
    redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  end
end
"""

# o: {running, migrating, active, hash, channel, pool, now, token, user, lifetime, tenant, held, counts};
# the VM is already out of ready. tenant '' is the anonymous tenant (counted, never limited).
HAND_OUT = """
local function hand_out(vm, o)
  redis.call('SADD', o.running, vm)
  redis.call('SADD', o.migrating, vm)
  redis.call('HSET', o.active, vm, o.now)
  redis.call('HSET', o.hash, 'checkout', o.now)
  redis.call('HSET', o.held, vm, o.tenant)
  if o.token ~= '' then
    redis.call('HSET', o.hash, 'token:token', o.token, 'token:user', o.user)
  end
  if o.lifetime ~= '' then
    redis.call('HSET', o.hash, 'lifetime', o.lifetime)
  end
  redis.call('HINCRBY', o.counts, o.tenant, 1)
  redis.call('PUBLISH', o.channel, cjson.encode({event = 'checkout', pool = o.pool, vm = vm}))
end
"""

RELEASE_TENANT = """
local function release_tenant(vm, held, counts)
  local tenant = redis.call('HGET', held, vm)
  if tenant then
    redis.call('HDEL', held, vm)
    if redis.call('HINCRBY', counts, tenant, -1) <= 0 then
      redis.call('HDEL', counts, tenant)
    end
  end
end
"""

# o: {ready, running, migrating, active, hash, held, counts}. -> 1 if the VM was running (now ready), else 0.
TAKE_BACK = """
local function take_back(vm, o)
  if redis.call('SREM', o.running, vm) == 0 then return 0 end
  redis.call('SREM', o.migrating, vm)
  redis.call('HDEL', o.active, vm)
  release_tenant(vm, o.held, o.counts)
  redis.call('HDEL', o.hash, 'checkout', 'token:token', 'token:user', 'lifetime')
  redis.call('SADD', o.ready, vm)
  return 1
end
"""


def append_writes(script_keys: list[str], argv: list[Any], writes: Iterable[tuple[str, str, str]]) -> None:
    """Append ``(hash key, field, value)`` writes to a script's KEYS and ARGV (see the module docstring)."""
    for key, field, value in writes:
        script_keys.append(key)
        argv += [len(script_keys), field, value]
