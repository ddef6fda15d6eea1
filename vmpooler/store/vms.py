"""The VM sets of each pool, the transitions between them, and each VM's hash.

Every transition is one atomic step (a Lua script or MULTI/EXEC) checked against ``model.TRANSITIONS``
right before it is written. The API makes two of them, the checkout (ready → running) and the return
(running → completed); every other one is made by the VM's own ``VMActor`` (or its ``PoolActor``
before the VM has an actor), so no VM is ever in two sets.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import redis as redis_lib

from vmpooler import keys
from vmpooler.errors import OverQuota, PoolEmpty, StoreUnavailable
from vmpooler.model import VMState, check_transition
from vmpooler.store.connection import RedisClock, translated
from vmpooler.store.writes import HAND_OUT, RELEASE_TENANT, TAKE_BACK, WRITE_OTHERS, append_writes

log = logging.getLogger(__name__)

__all__ = ["After", "Allocation", "Pick", "PoolSnapshot", "VMs"]

After = Callable[[Any], None]
"""Adds commands to a MULTI pipeline after a transition's script (``VMs.become_ready``)."""

# The sets a VM can be in, in the order the manager looks at them (``VMState``'s order).
_STATES = tuple(VMState)

# ARGV: now, token, user, lifetime, vm-hash prefix, npools, npools * (pool, channel), npicks,
#       npicks * (requested, ncand, ncand * pool index), tenant, quota ('' = none), deadline (Redis ms).
# KEYS, per pool: (ready, running, migrating, active) in this order; then the tenant counts, the held
# hash, the claim.
# Returns {1, requested, pool index, vm, ...}, {0, requested that could not be met}, {-2, quota} when the
# tenant would go over its quota, or {-1} when the script runs after its deadline: its client gave up on
# it (a frozen Redis), so it must change nothing.
_CHECKOUT = (
    HAND_OUT
    + """
redis.replicate_commands()
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return {-1}
end
local claim = KEYS[#KEYS]  -- this checkout's record: 'cancelled' once its client gave up on it
if redis.call('EXISTS', claim) == 1 then
  return {-1}
end
local counts, held = KEYS[#KEYS - 2], KEYS[#KEYS - 1]
local tenant, quota = ARGV[#ARGV - 2], tonumber(ARGV[#ARGV - 1])
local now, token, user, lifetime, vmprefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local npools = tonumber(ARGV[6])
local pools, channels = {}, {}
for i = 1, npools do
  pools[i] = ARGV[5 + 2 * i]
  channels[i] = ARGV[6 + 2 * i]
end
local pos = 7 + 2 * npools
local npicks = tonumber(ARGV[pos])
if quota and tonumber(redis.call('HGET', counts, tenant) or '0') + npicks > quota then
  return {-2, quota}
end
pos = pos + 1
local taken = {}
for _ = 1, npicks do
  local requested, ncand = ARGV[pos], tonumber(ARGV[pos + 1])
  pos = pos + 2
  local got = false
  for c = 0, ncand - 1 do
    if not got then
      local idx = tonumber(ARGV[pos + c])
      local vm = redis.call('SPOP', KEYS[4 * (idx - 1) + 1])
      if vm then
        taken[#taken + 1] = {idx, vm, requested}
        got = true
      end
    end
  end
  pos = pos + ncand
  if not got then
    for _, t in ipairs(taken) do
      redis.call('SADD', KEYS[4 * (t[1] - 1) + 1], t[2])
    end
    return {0, requested}
  end
end
local result = {1}
local record = {}
for _, t in ipairs(taken) do
  local idx, vm = t[1], t[2]
  local base = 4 * (idx - 1)
  hand_out(vm, {
    running = KEYS[base + 2], migrating = KEYS[base + 3], active = KEYS[base + 4], hash = vmprefix .. vm,
    channel = channels[idx], pool = pools[idx], now = now, token = token, user = user,
    lifetime = lifetime, tenant = tenant, held = held, counts = counts,
  })
  record[#record + 1] = idx .. ':' .. vm
  result[#result + 1] = t[3]
  result[#result + 1] = pools[idx]
  result[#result + 1] = vm
end
redis.call('SET', claim, table.concat(record, ','), 'EX', 300)
return result
"""
)

# KEYS: the checkout's record, then ready, running, migrating, active per pool, then the tenant counts
# and held hash (as the checkout's). ARGV: the VM hash prefix. -> VMs put back. A checkout whose client
# gave up (a reply timeout): the VMs it took go back to ready; if it has not run yet, the record says
# 'cancelled' and it never will.
_CANCEL = (
    RELEASE_TENANT
    + TAKE_BACK
    + """
local record = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'cancelled', 'EX', 300)
if not record or record == 'cancelled' then return 0 end
local back = 0
for entry in string.gmatch(record, '[^,]+') do
  local idx, vm = string.match(entry, '^(%d+):(.+)$')
  local base = 1 + 4 * (tonumber(idx) - 1)
  back = back + take_back(vm, {ready = KEYS[base + 1], running = KEYS[base + 2], migrating = KEYS[base + 3],
    active = KEYS[base + 4], hash = ARGV[1] .. vm, held = KEYS[#KEYS], counts = KEYS[#KEYS - 1]})
end
return back
"""
)

# KEYS: vm hash, tenant held, tenant counts, the queue. ARGV: vm, running prefix, completed prefix,
# channel prefix, pool ('': the one its hash names, ``pool`` else ``template``, as the original reads it),
# '1' to have the VM's hash back ('' for none: with a pool named here, it is not read at all).
# running → completed, the tenant's count released, a ``return`` event (``bus.Returned``):
# -> {0} no such VM (only looked up without a pool); {1, pool, checkouts wait, hash flat} returned;
#    {2, pool, hash flat} not running; {3, hash flat} its hash names no pool (the caller looks for it).
_RETURN = (
    RELEASE_TENANT
    + """
local pool, data = ARGV[5], {}
if ARGV[6] == '1' then
  data = redis.call('HGETALL', KEYS[1])
  if pool == '' and #data == 0 then return {0} end
end
if pool == '' then
  local template
  if ARGV[6] == '1' then
    for i = 1, #data, 2 do
      if data[i] == 'pool' then pool = data[i + 1]
      elseif data[i] == 'template' then template = data[i + 1] end
    end
  else
    local named = redis.call('HMGET', KEYS[1], 'pool', 'template')
    pool, template = named[1] or '', named[2]
    if pool == '' and not template and redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
  end
  if pool == '' then pool = template or '' end
  if pool == '' then return {3, data} end
end
if redis.call('SMOVE', ARGV[2] .. pool, ARGV[3] .. pool, ARGV[1]) == 0 then return {2, pool, data} end
release_tenant(ARGV[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[4] .. pool, cjson.encode({event = 'return', pool = pool, vm = ARGV[1]}))
return {1, pool, redis.call('EXISTS', KEYS[4]), data}
"""
)

# KEYS: vm hash, pending set. ARGV: vm, field, value, ... -> 0 if the name is taken.
_CREATE_PENDING = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"""

# KEYS: src set, dst set, vm hash, then hash/field pairs' keys. ARGV: vm, the tenant held and counts keys
# ('' and '' when src is not running), nfields, field, value, ..., then (key index, field, value)
# triples for other hashes. -> 1 if moved.
_MOVE = (
    WRITE_OTHERS
    + RELEASE_TENANT
    + """
if redis.call('SMOVE', KEYS[1], KEYS[2], ARGV[1]) == 0 then return 0 end
if ARGV[2] ~= '' then release_tenant(ARGV[1], ARGV[2], ARGV[3]) end
local nfields = tonumber(ARGV[4])
if nfields > 0 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 5, 4 + 2 * nfields))
end
write_others(5 + 2 * nfields)
return 1
"""
)

# KEYS: pending, ready, completed, vm hash, template override hash, then other hashes' keys.
# ARGV: vm, pool, the pool's template in the file, nfields, field, value, ..., (key index, field, value)...
# -> 1 ready; 2 cloned from a template that is no longer the pool's: to completed instead; 0 not pending.
_READY = (
    WRITE_OTHERS
    + """
local cloned = redis.call('HGET', KEYS[4], 'clone_template')
if cloned and cloned ~= (redis.call('HGET', KEYS[5], ARGV[2]) or ARGV[3]) then
  if redis.call('SMOVE', KEYS[1], KEYS[3], ARGV[1]) == 1 then return 2 end
  return 0
end
if redis.call('SMOVE', KEYS[1], KEYS[2], ARGV[1]) == 0 then return 0 end
local nfields = tonumber(ARGV[4])
if nfields > 0 then
  redis.call('HSET', KEYS[4], unpack(ARGV, 5, 4 + 2 * nfields))
end
write_others(5 + 2 * nfields)
return 1
"""
)

# KEYS: the pool's state sets..., migrating, active hash, vm hash. ARGV: vm, ttl seconds (0 = delete),
# source set index (0 = any), the running set's index, the tenant held and counts keys, field, value...
_RETIRE = (
    RELEASE_TENANT
    + """
local n = #KEYS
local src = tonumber(ARGV[3])
if src > 0 and redis.call('SISMEMBER', KEYS[src], ARGV[1]) == 0 then return 0 end
if redis.call('SISMEMBER', KEYS[tonumber(ARGV[4])], ARGV[1]) == 1 then
  release_tenant(ARGV[1], ARGV[5], ARGV[6])
end
for i = 1, n - 2 do redis.call('SREM', KEYS[i], ARGV[1]) end
redis.call('HDEL', KEYS[n - 1], ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl <= 0 then
  redis.call('DEL', KEYS[n])
  return 1
end
if #ARGV > 6 then redis.call('HSET', KEYS[n], unpack(ARGV, 7)) end
redis.call('EXPIRE', KEYS[n], ttl)
return 1
"""
)


class _CancelRetries:
    """Cancels of late checkouts that could not reach Redis, retried every half second by one daemon
    thread (started with the first) until Redis answers, for as long as the checkout's record lives."""

    _EVERY = 0.5
    _FOR = 290.0  # the record lives 300 s: after that a cancel could not tell what the checkout took

    def __init__(self) -> None:
        self._pending: list[tuple[float, Callable[[], object]]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, cancel: Callable[[], object]) -> None:
        with self._lock:
            self._pending.append((time.monotonic() + self._FOR, cancel))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True, name="checkout-cancels")
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._EVERY)
            with self._lock:
                pending, self._pending = self._pending, []
            kept = []
            for until, cancel in pending:
                try:
                    back = cancel()
                except redis_lib.RedisError:
                    if time.monotonic() < until:
                        kept.append((until, cancel))
                    else:
                        log.error("gave up cancelling a late checkout: its VMs may stay running")
                    continue
                if back:
                    log.warning(
                        "a late checkout was undone once redis answered: %s VM(s) back to ready", back
                    )
            with self._lock:
                self._pending.extend(kept)
                if not self._pending:
                    self._thread = None
                    return


@attrs.frozen
class Pick:
    """One VM wanted by a checkout: the name as requested and the pools to try, in order."""

    requested: str
    candidates: tuple[str, ...]


@attrs.frozen
class Allocation:
    """One VM handed out by a checkout."""

    requested: str
    pool: str
    vm: str


@attrs.frozen
class PoolSnapshot:
    """The members of each state set of one pool, read in one round trip."""

    pending: frozenset[str]
    ready: frozenset[str]
    running: frozenset[str]
    completed: frozenset[str]
    discovered: frozenset[str]
    migrating: frozenset[str] = frozenset()  # a side set: these VMs are also running

    def state_of(self, vm: str) -> VMState | None:
        for state in _STATES:
            if vm in getattr(self, state.value):
                return state
        return None

    def all(self) -> frozenset[str]:
        return self.pending | self.ready | self.running | self.completed | self.discovered


def state_sets(pool: str) -> list[str]:
    """The keys of ``pool``'s state sets, in ``VMState`` order (as ``PoolSnapshot``'s fields)."""
    return [keys.state_set(state.value, pool) for state in _STATES]


def _pairs(flat: Sequence[str]) -> dict[str, str]:
    """A hash from ``HGETALL``'s flat reply inside a script."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _flat(fields: Mapping[str, str]) -> list[Any]:
    """``field, value, field, value, ...`` for a script's ARGV."""
    return [item for pair in fields.items() for item in pair]


class _Nonces:
    """Names unique to one checkout, made without a system call (``secrets`` reads the kernel's random
    source each time, and under load a system call hands the GIL to another thread): a random prefix
    per process, new in a forked child, and a counter."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}-{next(self._count):x}"  # next() on a count is atomic under the GIL


_NONCES = _Nonces()
os.register_at_fork(after_in_child=_NONCES.reset)


class VMs:
    """The VM sets and hashes: checkout and return (the API), every other transition (the manager).

    Args:
        client: a redis-py client decoding responses to ``str``; its ``socket_timeout`` is how long
            a checkout waits for its reply (see ``checkout``).
    """

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._checkout = client.register_script(_CHECKOUT)
        self._cancel = client.register_script(_CANCEL)
        self._return = client.register_script(_RETURN)
        self._create_pending = client.register_script(_CREATE_PENDING)
        self._move = client.register_script(_MOVE)
        self._ready = client.register_script(_READY)
        self._retire = client.register_script(_RETIRE)
        kwargs = client.connection_pool.connection_kwargs
        self._reply_timeout = float(kwargs.get("socket_timeout") or 10.0)
        self._clock = RedisClock()
        self._retries = _CancelRetries()

    # -- the API's transitions: checkout and return ---------------------------------------------------

    @translated
    def checkout(
        self,
        picks: Sequence[Pick],
        *,
        now: str,
        token: str | None = None,
        user: str | None = None,
        lifetime: int | None = None,
        tenant: str = "",
        quota: int | None = None,
    ) -> list[Allocation]:
        """Hand out one ready VM per pick, all or none, in one atomic step.

        Each pick tries its candidate pools in order. Handed-out VMs are moved to ``running`` and
        ``migrating``, get ``checkout`` (and the token fields and lifetime when given) and a
        ``checkout`` event is published on their pool's channel; ``tenant`` ('' = anonymous) counts them
        (``keys.TENANT_RUNNING``). The script carries a deadline in Redis's clock (now + the client's
        reply timeout); run later than that, it changes nothing.

        Raises:
            PoolEmpty: a pick found no ready VM in any candidate; nothing was changed.
            OverQuota: ``tenant`` would hold more than ``quota`` running VMs; nothing was changed.
            StoreUnavailable: Redis ran the script after its deadline; nothing was changed.
        """
        if not picks:
            return []
        check_transition(VMState.READY, VMState.RUNNING)
        pool_index: dict[str, int] = {}
        for pick in picks:
            for pool in pick.candidates:
                pool_index.setdefault(pool, len(pool_index) + 1)
        script_keys: list[str] = []
        argv: list[Any] = [
            now,
            token or "",
            user or "",
            "" if lifetime is None else lifetime,
            keys.vm_hash(""),
            len(pool_index),
        ]
        for pool in pool_index:
            script_keys += [
                keys.ready_set(pool),
                keys.running_set(pool),
                keys.migrating_set(pool),
                keys.active_hash(pool),
            ]
            argv += [pool, keys.events_channel(pool)]
        argv.append(len(picks))
        for pick in picks:
            argv += [pick.requested, len(pick.candidates), *(pool_index[p] for p in pick.candidates)]
        argv += [tenant, "" if quota is None else quota]
        argv.append(self._clock.deadline_ms(self._redis, self._reply_timeout))
        script_keys += [keys.TENANT_RUNNING, keys.TENANT_HELD]
        claim = keys.checkout_claim(_NONCES.next())
        try:
            reply = self._checkout(keys=[*script_keys, claim], args=argv)
        except (redis_lib.TimeoutError, redis_lib.ConnectionError):
            self._cancel_quietly(claim, script_keys)
            raise
        if int(reply[0]) == -1:  # ran after we stopped waiting (this request already answered 503)
            raise StoreUnavailable("redis answered a checkout after its deadline; nothing was changed")
        if int(reply[0]) == 0:
            raise PoolEmpty(reply[1])
        if int(reply[0]) == -2:
            raise OverQuota(tenant, int(reply[1]))
        return [Allocation(reply[i], reply[i + 1], reply[i + 2]) for i in range(1, len(reply), 3)]

    def _cancel_quietly(self, claim: str, script_keys: list[str]) -> None:
        """The checkout's reply did not come in time: undo it if it ran, forbid it if it has not.

        A reply can be late with Redis fine (this process stalled) or Redis frozen; either way the
        client is answered 503, so the checkout must not stand. A checkout sent after Redis froze is
        stopped by its deadline in Redis's clock; one Redis ran just before it froze (its reply held
        back) is undone by this cancel, which is retried in the background until Redis answers it
        (``_CancelRetries``; the checkout's record lives 5 minutes).
        """
        try:
            back = self._cancel(keys=[claim, *script_keys], args=[keys.vm_hash("")])
        except redis_lib.RedisError as exc:
            log.warning("could not cancel a checkout whose reply was late (%s): retrying", exc)
            self._retries.add(
                functools.partial(self._cancel, keys=[claim, *script_keys], args=[keys.vm_hash("")])
            )
            return
        if back:
            log.warning("a checkout whose reply came too late was undone: %d VM(s) back to ready", back)

    @translated
    def return_vm(self, vm: str, pool: str, *, then: Callable[[], object] | None = None) -> bool:
        """Move a running VM of ``pool`` to completed and publish a ``return`` event, in one round trip.

        Args:
            then: called after the return when checkouts wait (a queue dispatch: the tenant may have
                room now); not otherwise, so a return costs one round trip while nobody waits.

        Returns:
            False if the VM was not running (nothing changed).
        """
        return self._return_one(vm, pool, then, False)[0] == "returned"

    @translated
    def return_named(
        self, vm: str, *, then: Callable[[], object] | None = None, with_hash: bool = True
    ) -> tuple[str, str | None, dict[str, str]]:
        """Return ``vm`` by its name alone, in one round trip: its hash names its pool (``pool``, else
        ``template``, as the original reads them); ``then`` as for :meth:`return_vm`.

        Args:
            with_hash: answer the VM's hash too (False: ``{}``, and Redis reads only its pool fields).

        Returns:
            ``(outcome, pool, the VM's hash as it was)``: ``"returned"``; ``"missing"`` (no such VM);
            ``"not-running"``; ``"no-pool"`` (its hash names no pool: use ``running_pool_of`` and
            ``return_vm``).
        """
        return self._return_one(vm, "", then, with_hash)

    def _return_one(
        self, vm: str, pool: str, then: Callable[[], object] | None, with_hash: bool
    ) -> tuple[str, str | None, dict[str, str]]:
        check_transition(VMState.RUNNING, VMState.COMPLETED)
        reply = self._return(
            keys=[keys.vm_hash(vm), keys.TENANT_HELD, keys.TENANT_RUNNING, keys.QUEUE],
            args=[
                vm,
                keys.running_set(""),
                keys.completed_set(""),
                keys.events_channel(""),
                pool,
                "1" if with_hash else "",
            ],
        )
        kind = int(reply[0])
        if kind == 0:
            return "missing", None, {}
        if kind == 3:
            return "no-pool", None, _pairs(reply[1])
        if kind == 2:
            return "not-running", reply[1], _pairs(reply[2])
        if int(reply[2]) and then is not None:
            then()
        return "returned", reply[1], _pairs(reply[3])

    def _then(self, script: Any, script_keys: list[str], argv: list[Any], after: After | None) -> Any:
        """Run ``script``, alone or first in a MULTI that ``after`` adds to; its reply."""
        if after is None:
            return script(keys=script_keys, args=argv)
        with self._redis.pipeline(transaction=True) as pipe:
            script(keys=script_keys, args=argv, client=pipe)
            after(pipe)
            return pipe.execute()[0]

    # -- the manager's transitions ----------------------------------------------------------------------

    @translated
    def create_pending(self, pool: str, vm: str, fields: Mapping[str, str]) -> bool:
        """Add a new VM to ``pending`` with its metadata; False if the name is already taken."""
        check_transition(None, VMState.PENDING)
        return bool(
            self._create_pending(keys=[keys.vm_hash(vm), keys.pending_set(pool)], args=[vm, *_flat(fields)])
        )

    @translated
    def move(
        self,
        pool: str,
        vm: str,
        src: VMState,
        dst: VMState,
        fields: Mapping[str, str] | None = None,
        other: Sequence[tuple[str, str, str]] = (),
    ) -> bool:
        """Move ``vm`` from one state set to another and, only if it moved, write fields.

        Args:
            fields: fields of the VM's own hash.
            other: ``(hash key, field, value)`` writes to other hashes (``Stats.boot_writes``).

        Returns:
            False if the VM was not in ``src`` (someone else moved it): nothing written.

        Raises:
            TransitionError: ``src → dst`` is not in ``model.TRANSITIONS`` (a bug: nothing written).
        """
        check_transition(src, dst)
        fields = fields or {}
        script_keys = [keys.state_set(src.value, pool), keys.state_set(dst.value, pool), keys.vm_hash(vm)]
        tenant_keys = [keys.TENANT_HELD, keys.TENANT_RUNNING] if src is VMState.RUNNING else ["", ""]
        argv: list[Any] = [vm, *tenant_keys, len(fields), *_flat(fields)]
        append_writes(script_keys, argv, other)
        return bool(self._move(keys=script_keys, args=argv))

    @translated
    def become_ready(
        self,
        pool: str,
        vm: str,
        *,
        template: str,
        fields: Mapping[str, str],
        other: Sequence[tuple[str, str, str]] = (),
        after: After | None = None,
    ) -> VMState | None:
        """pending → ready, unless the VM was cloned from a template that is no longer the pool's.

        The pool's template is its ``/config`` override, else ``template`` (the file's); a VM whose hash
        records another (``clone_template``) goes to ``completed`` instead, in the same script, so no VM
        from an old template becomes ready after the API accepted a new one.

        Returns:
            READY, COMPLETED (a stale template), or None when the VM was not pending: nothing written.
        """
        check_transition(VMState.PENDING, VMState.READY)
        check_transition(VMState.PENDING, VMState.COMPLETED)
        script_keys = [
            keys.pending_set(pool),
            keys.ready_set(pool),
            keys.completed_set(pool),
            keys.vm_hash(vm),
            keys.config_override("template"),
        ]
        argv: list[Any] = [vm, pool, template, len(fields), *_flat(fields)]
        append_writes(script_keys, argv, other)
        result = self._then(self._ready, script_keys, argv, after)
        return {1: VMState.READY, 2: VMState.COMPLETED}.get(int(result))

    @translated
    def retire(
        self,
        pool: str,
        vm: str,
        *,
        ttl_seconds: int,
        fields: Mapping[str, str] | None = None,
        src: VMState | None = None,
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
        script_keys = [*state_sets(pool), keys.migrating_set(pool), keys.active_hash(pool), keys.vm_hash(vm)]
        source = 0 if src is None else _STATES.index(src) + 1
        running = _STATES.index(VMState.RUNNING) + 1
        argv: list[Any] = [
            vm,
            int(ttl_seconds),
            source,
            running,
            keys.TENANT_HELD,
            keys.TENANT_RUNNING,
            *_flat(fields or {}),
        ]
        return bool(self._retire(keys=script_keys, args=argv))

    @translated
    def add_discovered(self, pool: str, vms: Iterable[str]) -> None:
        check_transition(None, VMState.DISCOVERED)
        names = list(vms)
        if names:
            self._redis.sadd(keys.discovered_set(pool), *names)

    @translated
    def leave(self, pool: str, leaving: Mapping[str, Iterable[VMState]]) -> None:
        """Take each VM out of the given sets: a VM found in two sets stays only in the later one
        (``lifecycle.settle_overlap``); e.g. a discovered VM that turned up in another set."""
        with self._redis.pipeline(transaction=True) as pipe:
            for vm, states in leaving.items():
                for state in states:
                    pipe.srem(keys.state_set(state.value, pool), vm)
            pipe.execute()

    @translated
    def remove_from_migrating(self, pool: str, vm: str) -> bool:
        return bool(self._redis.srem(keys.migrating_set(pool), vm))

    # -- reading the sets -------------------------------------------------------------------------------

    @translated
    def running_pool_of(self, vm: str, pools: Iterable[str]) -> str | None:
        """The pool whose running set holds ``vm`` (for VMs whose hash names no pool)."""
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                pipe.sismember(keys.running_set(pool), vm)
            found = pipe.execute()
        return next((pool for pool, hit in zip(names, found, strict=True) if hit), None)

    @translated
    def running_vms_of_token(self, pools: Iterable[str], token: str) -> list[str]:
        """Running VMs (of any of ``pools``) checked out with ``token``."""
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.smembers(keys.running_set(pool))
            running = sorted({vm for members in pipe.execute() for vm in members})
        if not running:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for vm in running:
                pipe.hget(keys.vm_hash(vm), "token:token")
            owners = pipe.execute()
        return [vm for vm, owner in zip(running, owners, strict=True) if owner == token]

    # -- each VM's hash ---------------------------------------------------------------------------------

    @translated
    def fields(self, vm: str) -> dict[str, str]:
        """The VM's metadata hash; empty when the VM is unknown."""
        return dict(self._redis.hgetall(keys.vm_hash(vm)))

    @translated
    def set_fields(self, vm: str, fields: Mapping[str, str]) -> None:
        if fields:
            self._redis.hset(keys.vm_hash(vm), mapping=dict(fields))

    @translated
    def stamp(self, vms: Iterable[str], fields: Mapping[str, str]) -> None:
        """Write the same ``fields`` into the hash of each of ``vms``, in one round trip."""
        with self._redis.pipeline(transaction=False) as pipe:
            for vm in vms:
                pipe.hset(keys.vm_hash(vm), mapping=dict(fields))
            pipe.execute()

    @translated
    def modify(self, vm: str, *, lifetime: int | None, tags: Mapping[str, str], date: str) -> None:
        """Write a new lifetime and/or tags in one MULTI (tags also feed the ``date`` tag stats)."""
        with self._redis.pipeline(transaction=True) as pipe:
            if lifetime is not None:
                pipe.hset(keys.vm_hash(vm), "lifetime", lifetime)
            for name, value in tags.items():
                pipe.hset(keys.vm_hash(vm), f"tag:{name}", value)
                pipe.hset(keys.tag_stats(date), f"{vm}:{name}", value)
            pipe.execute()

    @translated
    def append_disk(self, vm: str, disk: str) -> None:
        current = self._redis.hget(keys.vm_hash(vm), "disk")
        self._redis.hset(keys.vm_hash(vm), "disk", f"{current}:{disk}" if current else disk)
