"""The pool manager's Redis operations: VM transitions, clone slots, tasks, pool publication.

Every VM transition here is one atomic step (a Lua script or MULTI/EXEC) and is made only by the VM's
own ``VMActor`` (or its ``PoolActor`` before the VM has an actor), so no VM is ever in two sets.
Key names come from ``vmpooler.keys``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from vmpooler import keys
from vmpooler.model import VMState, check_transition
from vmpooler.store import Store, _translated

__all__ = ["ManagerStore", "PoolSnapshot", "PoolView", "Task"]

# Sets a VM can be in, in the order the manager looks at them.
_STATES = ("pending", "ready", "running", "completed", "discovered")

# KEYS: vm hash, pending set. ARGV: vm, field, value, ... -> 0 if the name is taken.
_CREATE_PENDING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: leases zset, counter, waiting pools zset. ARGV: member, limit, now, expiry, pool
# -> 1 if a slot was taken; else the pool waits (first refusal's time kept) for a released slot.
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 1
end
if n >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], n)
  redis.call('ZADD', KEYS[3], 'NX', ARGV[3], ARGV[5])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('SET', KEYS[2], n + 1)
return 1
"""

# KEYS: leases zset, counter, waiting pools zset. ARGV: pool channel prefix, members...
# -> remaining slots in use. Each slot freed wakes the pool that has waited longest, on its channel.
_RELEASE_SLOTS = """
local freed = 0
if #ARGV > 1 then freed = redis.call('ZREM', KEYS[1], unpack(ARGV, 2)) end
local n = redis.call('ZCARD', KEYS[1])
redis.call('SET', KEYS[2], n)
for i, pool in ipairs(redis.call('ZPOPMIN', KEYS[3], freed)) do
  if i % 2 == 1 then
    redis.call('PUBLISH', ARGV[1] .. pool, cjson.encode({event = 'slot', pool = pool}))
  end
end
return n
"""

# KEYS: src set, dst set, vm hash, then hash/field pairs' keys. ARGV: vm, nfields, field, value, ...,
# then (key index, field, value) triples for other hashes. -> 1 if moved.
_MOVE = """
if redis.call('SMOVE', KEYS[1], KEYS[2], ARGV[1]) == 0 then return 0 end
local nfields = tonumber(ARGV[2])
if nfields > 0 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 3, 2 + 2 * nfields))
end
local i = 3 + 2 * nfields
while i <= #ARGV do
  redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
return 1
"""

# KEYS: the pool's state sets..., active hash, vm hash. ARGV: vm, ttl seconds (0 = delete), field, value...
_RETIRE = """
local n = #KEYS
local src = tonumber(ARGV[3])
if src > 0 and redis.call('SISMEMBER', KEYS[src], ARGV[1]) == 0 then return 0 end
for i = 1, n - 2 do redis.call('SREM', KEYS[i], ARGV[1]) end
redis.call('HDEL', KEYS[n - 1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl <= 0 then
  redis.call('DEL', KEYS[n])
  return 1
end
if #ARGV > 3 then redis.call('HSET', KEYS[n], unpack(ARGV, 4)) end
redis.call('EXPIRE', KEYS[n], ttl)
return 1
"""

# KEYS: the task sets (disk, snapshot, snapshot-revert), then the pool's state sets.
# ARGV: the number of task sets. -> {set index, member, ...}: each task of a VM of this pool, removed
# from its set (the removal is the claim: no other process gets it).
_CLAIM_TASKS = """
local ntasks = tonumber(ARGV[1])
local claimed = {}
for t = 1, ntasks do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[t])) do
    local vm = string.match(member, '^([^:]*)')
    for s = ntasks + 1, #KEYS do
      if redis.call('SISMEMBER', KEYS[s], vm) == 1 then
        redis.call('SREM', KEYS[t], member)
        claimed[#claimed + 1] = t
        claimed[#claimed + 1] = member
        break
      end
    end
  end
end
return claimed
"""


@attrs.frozen
class PoolView:
    """What a pass needs to decide the VMs of one pool, read in one pipeline: each VM's hash, and the
    checkout time of each running VM (the pool's active hash)."""

    fields: dict[str, dict[str, str]]
    checkouts: dict[str, str]


@attrs.frozen
class PoolSnapshot:
    """The members of each state set of one pool, read in one round trip."""

    pending: frozenset[str]
    ready: frozenset[str]
    running: frozenset[str]
    completed: frozenset[str]
    discovered: frozenset[str]
    migrating: frozenset[str] = frozenset()  # a side set: these VMs are also running

    def state_of(self, vm: str) -> str | None:
        for state in _STATES:
            if vm in getattr(self, state):
                return state
        return None

    def all(self) -> frozenset[str]:
        return self.pending | self.ready | self.running | self.completed | self.discovered


@attrs.frozen
class Task:
    """A disk, snapshot or revert request claimed from the API's task sets."""

    kind: str
    vm: str
    argument: str


_TASK_SETS = {
    "disk": keys.TASKS_DISK,
    "snapshot": keys.TASKS_SNAPSHOT,
    "snapshot-revert": keys.TASKS_SNAPSHOT_REVERT,
}


class ManagerStore(Store):
    """``Store`` plus the operations only the manager makes."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self._create_pending = client.register_script(_CREATE_PENDING)
        self._acquire_slot = client.register_script(_ACQUIRE_SLOT)
        self._release_slots = client.register_script(_RELEASE_SLOTS)
        self._move = client.register_script(_MOVE)
        self._retire = client.register_script(_RETIRE)
        self._claim_tasks = client.register_script(_CLAIM_TASKS)

    # -- pools -----------------------------------------------------------------------------------

    @_translated
    def publish_pools(self, pools: Mapping[str, Mapping[str, str]], *, remove_others: bool) -> None:
        """Write each pool's config hash and the pool name set (as the original)."""
        with self._redis.pipeline(transaction=True) as pipe:
            if remove_others:
                for stale in set(self._redis.smembers(keys.POOLS)) - set(pools):
                    pipe.srem(keys.POOLS, stale)
                    pipe.delete(keys.pool_hash(stale))
            for name, fields in pools.items():
                pipe.sadd(keys.POOLS, name)
                pipe.delete(keys.pool_hash(name))
                if fields:
                    pipe.hset(keys.pool_hash(name), mapping=dict(fields))
            pipe.execute()

    @_translated
    def snapshot(self, pool: str) -> PoolSnapshot:
        with self._redis.pipeline(transaction=True) as pipe:
            for state in (*_STATES, "migrating"):
                pipe.smembers(keys.state_set(state, pool))
            members = pipe.execute()
        return PoolSnapshot(*(frozenset(m) for m in members))

    @_translated
    def pool_view(self, pool: str, vms: Iterable[str]) -> PoolView:
        """The hashes of ``vms`` and the pool's checkout times, in one round trip."""
        names = list(vms)
        with self._redis.pipeline(transaction=False) as pipe:
            for vm in names:
                pipe.hgetall(keys.vm_hash(vm))
            pipe.hgetall(keys.active_hash(pool))
            replies = pipe.execute()
        return PoolView(dict(zip(names, replies[:-1], strict=True)), replies[-1])

    @_translated
    def claim_pool_reset(self, pool: str) -> bool:
        """Take a pending ``POST /poolreset`` request for ``pool``; True if there was one."""
        return bool(self._redis.srem(keys.POOLRESET, pool))

    @_translated
    def set_empty_flag(self, pool: str, empty: bool) -> bool:
        """Set or clear the pool's empty flag; True if it changed (for logging once)."""
        if empty:
            return bool(self._redis.set(keys.empty_flag(pool), "true", nx=True))
        return bool(self._redis.delete(keys.empty_flag(pool)))

    # -- clone slots -----------------------------------------------------------------------------

    @_translated
    def acquire_clone_slot(self, owner: str, vm: str, *, limit: int, lease_seconds: float, pool: str) -> bool:
        """Take one of the ``task_limit`` clone slots shared by every provider process.

        A slot is a lease that expires by itself, and a provider process releases all of its own at
        start (``release_owner_slots``), so a process that dies never leaks one. A refused ``pool``
        waits in ``vmpooler__tasks__clone_waiting``: the next slot released, by any process, sends it a
        ``slot`` event, so it clones at once instead of on its next pass.
        """
        now = time.time()
        return bool(
            self._acquire_slot(
                keys=[keys.CLONE_LEASES, keys.TASKS_CLONE, keys.CLONE_WAITING],
                args=[f"{owner}:{vm}", limit, now, now + lease_seconds, pool],
            )
        )

    @_translated
    def release_clone_slot(self, owner: str, vm: str) -> None:
        self._release_slots(
            keys=[keys.CLONE_LEASES, keys.TASKS_CLONE, keys.CLONE_WAITING],
            args=[keys.events_channel(""), f"{owner}:{vm}"],
        )

    @_translated
    def release_owner_slots(self, owner: str) -> int:
        """Drop every slot ``owner`` holds (its clones died with its previous process)."""
        prefix = f"{owner}:"
        mine = [m for m in self._redis.zrange(keys.CLONE_LEASES, 0, -1) if m.startswith(prefix)]
        self._release_slots(
            keys=[keys.CLONE_LEASES, keys.TASKS_CLONE, keys.CLONE_WAITING],
            args=[keys.events_channel(""), *mine],
        )
        return len(mine)

    # -- VM transitions --------------------------------------------------------------------------

    @_translated
    def create_pending(self, pool: str, vm: str, fields: Mapping[str, str]) -> bool:
        """Add a new VM to ``pending`` with its metadata; False if the name is already taken."""
        check_transition(None, VMState.PENDING)
        flat: list[str] = []
        for field, value in fields.items():
            flat += [field, value]
        return bool(self._create_pending(keys=[keys.vm_hash(vm), keys.pending_set(pool)], args=[vm, *flat]))

    @_translated
    def move(
        self,
        pool: str,
        vm: str,
        src: str,
        dst: str,
        fields: Mapping[str, str] | None = None,
        other: Sequence[tuple[str, str, str]] = (),
    ) -> bool:
        """Move ``vm`` from one state set to another and, only if it moved, write fields.

        Args:
            fields: fields of the VM's own hash.
            other: ``(hash key, field, value)`` writes to other hashes (stats, lastboot).

        Returns:
            False if the VM was not in ``src`` (someone else moved it): nothing written.

        Raises:
            TransitionError: ``src → dst`` is not in ``model.TRANSITIONS`` (a bug: nothing written).
        """
        check_transition(VMState(src), VMState(dst))
        fields = fields or {}
        script_keys = [keys.state_set(src, pool), keys.state_set(dst, pool), keys.vm_hash(vm)]
        argv: list[Any] = [vm, len(fields)]
        for field, value in fields.items():
            argv += [field, value]
        for key, field, value in other:
            script_keys.append(key)
            argv += [len(script_keys), field, value]
        return bool(self._move(keys=script_keys, args=argv))

    @_translated
    def retire(
        self,
        pool: str,
        vm: str,
        *,
        ttl_seconds: int,
        fields: Mapping[str, str] | None = None,
        src: str | None = None,
    ) -> bool:
        """Take ``vm`` out of every set of its pool and its active hash.

        With ``ttl_seconds`` > 0 its metadata is kept that long (after a destroy or a failed clone, so
        ``GET /vm`` can still show it), with ``fields`` written first; with 0 it is deleted now. With
        ``src``, only if the VM is still in that state set (else nothing changes: someone retired or
        moved it first, and its record stays as they left it).

        Returns:
            False when ``src`` was given and the VM was not in it.
        """
        for state in VMState:
            check_transition(state, None)
        script_keys = [keys.state_set(state, pool) for state in _STATES]
        script_keys += [keys.migrating_set(pool), keys.active_hash(pool), keys.vm_hash(vm)]
        argv: list[Any] = [vm, int(ttl_seconds), 0 if src is None else _STATES.index(src) + 1]
        for field, value in (fields or {}).items():
            argv += [field, value]
        return bool(self._retire(keys=script_keys, args=argv))

    @_translated
    def add_discovered(self, pool: str, vms: Iterable[str]) -> None:
        check_transition(None, VMState.DISCOVERED)
        names = list(vms)
        if names:
            self._redis.sadd(keys.discovered_set(pool), *names)

    @_translated
    def forget_discovered(self, pool: str, vms: Iterable[str]) -> None:
        """Take VMs out of ``discovered`` that turned out to be in another set (as the original)."""
        names = list(vms)
        if names:
            self._redis.srem(keys.discovered_set(pool), *names)

    @_translated
    def vm_fields(self, vm: str) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.vm_hash(vm)))

    @_translated
    def set_vm_fields(self, vm: str, fields: Mapping[str, str]) -> None:
        if fields:
            self._redis.hset(keys.vm_hash(vm), mapping=dict(fields))

    @_translated
    def stamp_vms(self, vms: Iterable[str], fields: Mapping[str, str]) -> None:
        """Write the same ``fields`` into the hash of each of ``vms``, in one round trip."""
        with self._redis.pipeline(transaction=False) as pipe:
            for vm in vms:
                pipe.hset(keys.vm_hash(vm), mapping=dict(fields))
            pipe.execute()

    @_translated
    def record_clone(self, pool: str, vm: str, *, date: str, seconds: float, ip: str | None) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.clone_stats(date), f"{pool}:{vm}", f"{seconds:.2f}")
            fields = {"clone_time": f"{seconds:.2f}"}
            if ip:
                fields["ip"] = ip
            pipe.hset(keys.vm_hash(vm), mapping=fields)
            pipe.execute()

    @_translated
    def remove_from_migrating(self, pool: str, vm: str) -> bool:
        return bool(self._redis.srem(keys.migrating_set(pool), vm))

    # -- tasks from the API ------------------------------------------------------------------------

    @_translated
    def claim_tasks(self, pool: str) -> list[Task]:
        """Take the queued disk/snapshot/revert requests of the VMs of ``pool``, in one script."""
        kinds = list(_TASK_SETS)
        script_keys = [*_TASK_SETS.values(), *(keys.state_set(state, pool) for state in _STATES)]
        reply = self._claim_tasks(keys=script_keys, args=[len(kinds)])
        claimed = []
        for index, member in zip(reply[::2], reply[1::2], strict=True):
            vm, _, argument = member.partition(":")
            claimed.append(Task(kinds[int(index) - 1], vm, argument))
        return claimed

    @_translated
    def append_disk(self, vm: str, disk: str) -> None:
        current = self._redis.hget(keys.vm_hash(vm), "disk")
        self._redis.hset(keys.vm_hash(vm), "disk", f"{current}:{disk}" if current else disk)

    # -- events ----------------------------------------------------------------------------------

    def events_pubsub(self, pools: Iterable[str]) -> Any:
        """A pub/sub object subscribed to the channels of ``pools`` (``vmpooler.bus``)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*(keys.events_channel(p) for p in pools))
        return pubsub
