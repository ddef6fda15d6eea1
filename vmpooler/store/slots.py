"""Clone slots: the ``task_limit`` clones in flight, shared by every provider process, and the on-demand
lane's ``ondemand_clone_limit`` beside them.

A slot is a lease (member ``<owner>:<slot id>`` of ``vmpooler__tasks__clone_leases``, score = expiry)
that expires by itself, so a process that dies never leaks one; ``vmpooler__tasks__clone`` is kept equal
to the number in use for ``/status``. See docs/architecture.md, "Task limit". The on-demand lane has the
same shape in its own keys (``vmpooler__tasks__ondemandclone_leases``, ``vmpooler__tasks__ondemandclone``);
its slots are taken by ``store.provisioning.claim`` and their ids start with :data:`ONDEMAND_PREFIX`, so
``release`` knows the lane from the id; a release there wakes a waiting process with an ``ondemand``
event instead of a ``slot`` event.
"""

from __future__ import annotations

import time
from typing import Any

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["ONDEMAND_PREFIX", "Slots", "lane_of"]

ONDEMAND_PREFIX = "od-"  # the ids of on-demand lane slots


def lane_of(slot: str) -> str:
    """``ondemand`` for a slot of the on-demand lane, else ``clone``."""
    return "ondemand" if slot.startswith(ONDEMAND_PREFIX) else "clone"


# KEYS: leases zset, counter, waiting pools zset, queue demand hash. ARGV: member, limit, now, expiry, pool
# -> {1 if a slot was taken, else 0, slots in use}; a refused pool waits (first refusal's time kept) for
# a released slot. While checkouts wait for other pools and none for this one, this pool (refilling its
# buffer) may use only the lower half of the slots: the upper half is kept for cloning what is waited for.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {1, n}
end
local limit = tonumber(ARGV[2])
if not redis.call('HGET', KEYS[4], ARGV[5]) and redis.call('HLEN', KEYS[4]) > 0 then
  limit = limit - math.floor(limit / 2)
end
if n >= limit then
  redis.call('SET', KEYS[2], n)
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[5])
  return {0, n}
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('SET', KEYS[2], n + 1)
return {1, n + 1}
"""

# KEYS: leases zset, counter, waiting pools zset. ARGV: pool channel prefix, event kind, members...
# -> remaining slots in use. Each slot freed wakes the pool that has waited longest, on its channel.
_RELEASE = """
local freed = 0
if #ARGV > 2 then freed = redis.call('ZREM', KEYS[1], unpack(ARGV, 3)) end
local n = redis.call('ZCARD', KEYS[1])
redis.call('SET', KEYS[2], n)
for i, pool in ipairs(redis.call('ZPOPMIN', KEYS[3], freed)) do
  if i % 2 == 1 then
    local event = {event = ARGV[2], pool = pool}
    if ARGV[2] == 'ondemand' then event.request_id = '' end
    redis.call('PUBLISH', ARGV[1] .. pool, cjson.encode(event))
  end
end
return n
"""

_KEYS = [keys.CLONE_LEASES, keys.TASKS_CLONE, keys.CLONE_WAITING]
_ONDEMAND_KEYS = [keys.ONDEMAND_LEASES, keys.TASKS_ONDEMANDCLONE, keys.ONDEMAND_WAITING]


class Slots:
    """Take and give back clone slots (the manager's PoolActors and VMActors)."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @translated
    def acquire(
        self, owner: str, slot: str, *, limit: int, lease_seconds: float, pool: str
    ) -> tuple[bool, int]:
        """Take one of the ``task_limit`` clone slots shared by every provider process.

        A provider process releases all of its own at start (``release_owner``), so a process that
        dies never leaks one. While checkouts wait for other pools and none waits for ``pool``, it may
        take only the lower half of the slots (its clones refill an idle buffer; theirs are waited
        for). A refused ``pool`` waits in ``vmpooler__tasks__clone_waiting``: the next slot released, by
        any process, sends it a ``slot`` event, so it clones at once instead of on its next pass.

        Returns:
            (whether the slot was taken, the slots in use now).
        """
        now = time.time()
        taken, in_use = self._acquire(
            keys=[*_KEYS, keys.QUEUE_DEMAND], args=[f"{owner}:{slot}", limit, now, now + lease_seconds, pool]
        )
        return bool(taken), int(in_use)

    @translated
    def release(self, owner: str, slot: str) -> int:
        """Give a slot back (either lane: an on-demand slot's id says so); the slots of that lane still
        in use."""
        lane, event = (_ONDEMAND_KEYS, "ondemand") if lane_of(slot) == "ondemand" else (_KEYS, "slot")
        return int(self._release(keys=lane, args=[keys.events_channel(""), event, f"{owner}:{slot}"]))

    @translated
    def release_owner(self, owner: str) -> int:
        """Drop every slot ``owner`` holds in both lanes (its clones died with its previous process)."""
        prefix = f"{owner}:"
        released = 0
        for lane, event in ((_KEYS, "slot"), (_ONDEMAND_KEYS, "ondemand")):
            mine = [m for m in self._redis.zrange(lane[0], 0, -1) if m.startswith(prefix)]
            self._release(keys=lane, args=[keys.events_channel(""), event, *mine])
            released += len(mine)
        return released
