"""On-demand requests, the manager's side: intake, clone claims on the on-demand lane, a VM of a request
becoming ready, failures with retries, and expiry (docs/architecture.md, "On-demand requests").

The API's side (create, status, delete) is ``store.ondemand``; both work on the original's keys. Every
step is one script, so any number of provider processes share the work without a lock: a request is
taken in once, a clone task is claimed once, and a VM becoming ready and the API deleting its request
run one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from vmpooler import keys
from vmpooler.model import VMState
from vmpooler.store.connection import translated
from vmpooler.store.slots import ONDEMAND_PREFIX
from vmpooler.store.writes import WRITE_OTHERS, append_writes

__all__ = ["READY_TTL", "TTL_FAILURE", "Claim", "Provisioning"]

READY_TTL = 2_592_000  # a ready request's hash lives 30 days, as the original's
TTL_FAILURE = "The request failed to provision instances within the configured ondemand_request_ttl '{ttl}'"

# Shared Lua: the request hash and VM set names are built from ARGV formats (``keys`` spells them).
# FMT: {request hash fmt, request vm set fmt, running fmt, completed fmt, active fmt, channel prefix}
_COMMON = """
local function parse(entry)
  local alias, pool, n = string.match(entry, '^([^:]+):([^:]+):(%d+)$')
  return alias, pool, tonumber(n)
end

local function parse_task(member)
  local alias, pool, n, id = string.match(member, '^([^:]+):([^:]+):(%d+):(.+)$')
  return alias, pool, tonumber(n), id
end

-- add n clones of alias/pool for request id, merged into a task already queued for the same three
local function add_task(tasks, alias, pool, n, id, score)
  local head = alias .. ':' .. pool .. ':'
  for _, member in ipairs(redis.call('ZRANGE', tasks, 0, -1)) do
    local a, p, m, i = parse_task(member)
    if a == alias and p == pool and i == id then
      local old = tonumber(redis.call('ZSCORE', tasks, member))
      redis.call('ZREM', tasks, member)
      n = n + m
      if old < score then score = old end
      break
    end
  end
  redis.call('ZADD', tasks, score, head .. n .. ':' .. id)
end

-- every VM the request holds goes running -> completed (a 'return' event each); its VM sets go
local function release_vms(id, requested, fmt)
  for entry in string.gmatch(requested or '', '[^,]+') do
    local alias, pool = parse(entry)
    if alias then
      local set = string.format(fmt[2], id, alias, pool)
      for _, vm in ipairs(redis.call('SMEMBERS', set)) do
        if redis.call('SMOVE', string.format(fmt[3], pool), string.format(fmt[4], pool), vm) == 1 then
          redis.call('HDEL', string.format(fmt[5], pool), vm)
          redis.call('PUBLISH', fmt[6] .. pool, cjson.encode({event = 'return', pool = pool, vm = vm}))
        end
      end
      redis.call('DEL', set)
    end
  end
end

-- the request fails: status, reason, expiry; out of every queue; its tasks dropped; its VMs destroyed
local function fail_request(id, reason, ttl, fmt, request_q, processing_q, tasks)
  local hash = string.format(fmt[1], id)
  redis.call('HSET', hash, 'status', 'failed', 'failure_reason', reason)
  redis.call('EXPIRE', hash, ttl)
  redis.call('ZREM', request_q, id)
  redis.call('ZREM', processing_q, id)
  for _, member in ipairs(redis.call('ZRANGE', tasks, 0, -1)) do
    local _, _, _, i = parse_task(member)
    if i == id then redis.call('ZREM', tasks, member) end
  end
  release_vms(id, redis.call('HGET', hash, 'requested'), fmt)
end
"""

_NFMT = 6


def _fmt_args() -> list[str]:
    return [
        keys.odrequest("%s"),
        keys.odrequest_vms("%s", "%s", "%s"),
        keys.running_set("%s"),
        keys.completed_set("%s"),
        keys.active_hash("%s"),
        keys.events_channel(""),
    ]


_FMT = "local fmt = {" + ", ".join(f"ARGV[{i + 1}]" for i in range(_NFMT)) + "}\n"

# KEYS: request zset, processing zset, tasks zset. ARGV: fmt..., now -> requests taken in
_INTAKE = (
    _COMMON
    + _FMT
    + """
local now = tonumber(ARGV[7])
local taken = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local hash = string.format(fmt[1], id)
  local requested = redis.call('HGET', hash, 'requested')
  local status = redis.call('HGET', hash, 'status')
  local score = redis.call('ZSCORE', KEYS[1], id)
  -- ours: priority 1 goes before 2 before 3 (epoch -/+ 10^9 s: the retries' score 1 stays first)
  local task_score = now + (tonumber(redis.call('HGET', hash, 'priority') or '2') - 2) * 1e9
  redis.call('ZREM', KEYS[1], id)
  if requested and not status then
    for entry in string.gmatch(requested, '[^,]+') do
      local alias, pool, n = parse(entry)
      if alias and n > 0 then add_task(KEYS[3], alias, pool, n, id, task_score) end
    end
    redis.call('ZADD', KEYS[2], score, id)
    taken = taken + 1
  end
end
return taken
"""
)

# KEYS: tasks zset, leases zset, counter, waiting zset.
# ARGV: fmt..., owner, limit, now, lease expiry, waiting member, npools, pools..., slot ids...
# -> {id, alias, pool, slot id, ...}: one entry per clone to start now
_CLAIM = (
    _COMMON
    + _FMT
    + """
local owner, limit, now, expiry = ARGV[7], tonumber(ARGV[8]), ARGV[9], ARGV[10]
local npools = tonumber(ARGV[12])
local lease_prefix = ARGV[13 + 2 * npools]
local mine = {}
for i = 13, 12 + npools do
  -- a pool whose lease token is given counts only while that token is its lease's (fencing)
  local token = ARGV[i + npools]
  if token == '' or redis.call('HGET', lease_prefix .. ARGV[i], 'token') == token then
    mine[ARGV[i]] = true
  end
end
local next_slot = 14 + 2 * npools
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local free = limit - redis.call('ZCARD', KEYS[2])
local out = {}
local blocked = false
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local alias, pool, n, id = parse_task(member)
  if not alias then
    redis.call('ZREM', KEYS[1], member)
  elseif mine[pool] then
    local hash = string.format(fmt[1], id)
    local status = redis.call('HGET', hash, 'status')
    if redis.call('EXISTS', hash) == 0 or status then
      redis.call('ZREM', KEYS[1], member)
    elseif free <= 0 then
      blocked = true
      break
    else
      local k = math.min(n, free)
      local score = redis.call('ZSCORE', KEYS[1], member)
      redis.call('ZREM', KEYS[1], member)
      if n > k then
        add_task(KEYS[1], alias, pool, n - k, id, tonumber(score))
        blocked = true
      end
      for _ = 1, k do
        local slot = ARGV[next_slot]
        next_slot = next_slot + 1
        redis.call('ZADD', KEYS[2], expiry, owner .. ':' .. slot)
        out[#out + 1] = id
        out[#out + 1] = alias
        out[#out + 1] = pool
        out[#out + 1] = slot
      end
      free = free - k
    end
  end
end
redis.call('SET', KEYS[3], redis.call('ZCARD', KEYS[2]))
if blocked then redis.call('ZADD', KEYS[4], 'NX', now, ARGV[11]) end
return out
"""
)

# KEYS: processing zset, pending, running, completed, active hash, vm hash, then other hashes' keys.
# ARGV: fmt..., id, alias, pool, vm, now text, lifetime ('' = none), ready ttl, (key index, field, value)...
# -> 1 running for the request; 2 the request is over or full: to completed; 0 not pending
_VM_READY = (
    _COMMON
    + WRITE_OTHERS
    + _FMT
    + """
local id, alias, pool, vm, now, lifetime = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local hash = string.format(fmt[1], id)
local set = string.format(fmt[2], id, alias, pool)
local requested = redis.call('HGET', hash, 'requested')
local wanted = 0
for entry in string.gmatch(requested or '', '[^,]+') do
  local a, p, n = parse(entry)
  if a == alias and p == pool then wanted = n end
end
if not requested or redis.call('HGET', hash, 'status') or redis.call('SCARD', set) >= wanted then
  if redis.call('SMOVE', KEYS[2], KEYS[4], vm) == 1 then return 2 end
  return 0
end
if redis.call('SMOVE', KEYS[2], KEYS[3], vm) == 0 then return 0 end
redis.call('HSET', KEYS[5], vm, now)
redis.call('HSET', KEYS[6], 'checkout', now, 'ready', now)
local token = redis.call('HGET', hash, 'token:token')
if token then
  local user = redis.call('HGET', hash, 'token:user') or ''
  redis.call('HSET', KEYS[6], 'token:token', token, 'token:user', user)
  if lifetime ~= '' then redis.call('HSET', KEYS[6], 'lifetime', lifetime) end
end
redis.call('SADD', set, vm)
write_others(14)
for entry in string.gmatch(requested, '[^,]+') do
  local a, p, n = parse(entry)
  if a and redis.call('SCARD', string.format(fmt[2], id, a, p)) < n then return 1 end
end
redis.call('HSET', hash, 'status', 'ready')
redis.call('EXPIRE', hash, ARGV[13])
redis.call('ZREM', KEYS[1], id)
return 1
"""
)

# KEYS: request zset, processing zset, tasks zset.
# ARGV: fmt..., id, alias, pool, permanent (0/1), max retries, reason, data ttl, retry score
# -> 'retry', 'failed', or 'moot' (the request is over already)
_VM_FAILED = (
    _COMMON
    + _FMT
    + """
local id, alias, pool = ARGV[7], ARGV[8], ARGV[9]
local hash = string.format(fmt[1], id)
if redis.call('EXISTS', hash) == 0 or redis.call('HGET', hash, 'status') then return 'moot' end
local retries = tonumber(redis.call('HGET', hash, 'retry_count') or '0') or 0
if ARGV[10] == '0' and retries < tonumber(ARGV[11]) then
  redis.call('HINCRBY', hash, 'retry_count', 1)
  add_task(KEYS[3], alias, pool, 1, id, tonumber(ARGV[14]))
  redis.call('PUBLISH', fmt[6] .. pool, cjson.encode({event = 'ondemand', pool = pool, request_id = id}))
  return 'retry'
end
fail_request(id, ARGV[12], tonumber(ARGV[13]), fmt, KEYS[1], KEYS[2], KEYS[3])
return 'failed'
"""
)

# KEYS: request zset, processing zset, tasks zset. ARGV: fmt..., cutoff epoch, reason, data ttl
# -> {number of requests still in processing, ids failed...}
_EXPIRE = (
    _COMMON
    + _FMT
    + """
local failed = {0}
for _, queue in ipairs({KEYS[1], KEYS[2]}) do
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', queue, '-inf', ARGV[7])) do
    fail_request(id, ARGV[8], tonumber(ARGV[9]), fmt, KEYS[1], KEYS[2], KEYS[3])
    failed[#failed + 1] = id
  end
end
failed[1] = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[1])
return failed
"""
)

# KEYS: tasks zset. ARGV: fmt..., alias, pool, id, score -> 1 (one clone queued again, not a retry)
_REQUEUE = (
    _COMMON
    + _FMT
    + """
add_task(KEYS[1], ARGV[7], ARGV[8], 1, ARGV[9], tonumber(ARGV[10]))
local event = {event = 'ondemand', pool = ARGV[8], request_id = ARGV[9]}
redis.call('PUBLISH', fmt[6] .. ARGV[8], cjson.encode(event))
return 1
"""
)

_QUEUES = [keys.PROVISIONING_REQUEST, keys.PROVISIONING_PROCESSING, keys.ODCREATE_TASK]
_RETRY_SCORE = 1  # a retry goes first in line, as the original's


@attrs.frozen
class Claim:
    """One on-demand clone to start now, holding the on-demand lane slot ``slot``."""

    request_id: str
    alias: str
    pool: str
    slot: str


class Provisioning:
    """The manager's on-demand steps (a part of ``Store``)."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._intake = client.register_script(_INTAKE)
        self._claim = client.register_script(_CLAIM)
        self._vm_ready = client.register_script(_VM_READY)
        self._vm_failed = client.register_script(_VM_FAILED)
        self._expire = client.register_script(_EXPIRE)
        self._requeue = client.register_script(_REQUEUE)

    @translated
    def intake(self, now: float) -> int:
        """Take every new request in: its clone tasks are queued, it moves to processing."""
        return int(self._intake(keys=_QUEUES, args=[*_fmt_args(), now]))

    @translated
    def claim(
        self,
        owner: str,
        pools: Sequence[str],
        slots: Sequence[str],
        *,
        limit: int,
        now: float,
        lease_seconds: float,
        tokens: Mapping[str, int] | None = None,
    ) -> list[Claim]:
        """Claim the clone tasks of ``pools`` that the on-demand lane has room for (oldest first).

        Args:
            owner: the provider instance (the leases' owner, as ``store.slots``).
            slots: fresh slot ids (each starting with ``slots.ONDEMAND_PREFIX``), at least ``limit``.
            limit: ``ondemand_clone_limit``, over every provider process.
            tokens: pool -> the fencing token of its lease held here (several managers): a pool counts
                only while its lease still has that token, checked in the same script.
        """
        if not pools:
            return []
        assert all(s.startswith(ONDEMAND_PREFIX) for s in slots)
        reply = self._claim(
            keys=[keys.ODCREATE_TASK, keys.ONDEMAND_LEASES, keys.TASKS_ONDEMANDCLONE, keys.ONDEMAND_WAITING],
            args=[
                *_fmt_args(),
                owner,
                min(limit, len(slots)),
                now,
                now + lease_seconds,
                pools[0],
                len(pools),
                *pools,
                *(str((tokens or {}).get(pool, "")) for pool in pools),
                keys.lease(""),
                *slots,
            ],
        )
        return [Claim(*reply[i : i + 4]) for i in range(0, len(reply), 4)]

    @translated
    def vm_ready(
        self,
        request_id: str,
        alias: str,
        pool: str,
        vm: str,
        *,
        now: str,
        lifetime: int | None,
        other: Iterable[tuple[str, str, str]] = (),
    ) -> VMState | None:
        """A VM of a request is ready: pending → running for the request, unless the request is over
        (failed, deleted, gone) or already has its VMs of this kind: then pending → completed.

        Returns:
            RUNNING, COMPLETED, or None when the VM was not pending (nothing written).
        """
        script_keys = [
            keys.PROVISIONING_PROCESSING,
            keys.pending_set(pool),
            keys.running_set(pool),
            keys.completed_set(pool),
            keys.active_hash(pool),
            keys.vm_hash(vm),
        ]
        argv: list[Any] = [
            *_fmt_args(),
            request_id,
            alias,
            pool,
            vm,
            now,
            lifetime or "",
            READY_TTL,
        ]
        append_writes(script_keys, argv, other)
        result = int(self._vm_ready(keys=script_keys, args=argv))
        return {1: VMState.RUNNING, 2: VMState.COMPLETED}.get(result)

    @translated
    def vm_failed(
        self,
        request_id: str,
        alias: str,
        pool: str,
        *,
        permanent: str | None,
        max_retries: int,
        data_ttl: int,
    ) -> str:
        """A clone of the request failed (or its VM timed out pending): queue one more clone while
        ``retry_count`` < ``max_retries`` and the error is not permanent; else fail the request.

        Args:
            permanent: the message of a permanent error (configuration), or None.

        Returns:
            ``"retry"``, ``"failed"``, or ``"moot"`` when the request was over already.
        """
        reason = f"Configuration error: {permanent}" if permanent else "Max retry attempts exceeded"
        return str(
            self._vm_failed(
                keys=_QUEUES,
                args=[
                    *_fmt_args(),
                    request_id,
                    alias,
                    pool,
                    1 if permanent else 0,
                    max_retries,
                    reason,
                    data_ttl,
                    _RETRY_SCORE,
                ],
            )
        )

    @translated
    def requeue(self, request_id: str, alias: str, pool: str) -> None:
        """Queue one clone of the request again (a clone that never started; not a retry)."""
        self._requeue(keys=[keys.ODCREATE_TASK], args=[*_fmt_args(), alias, pool, request_id, _RETRY_SCORE])

    @translated
    def expire(self, now: float, *, ttl_minutes: int, data_ttl: int) -> tuple[int, list[str]]:
        """Fail every request older than ``ondemand_request_ttl`` that is not ready.

        Returns:
            (requests still waiting or in processing, ids of the requests failed now).
        """
        reply = self._expire(
            keys=_QUEUES,
            args=[*_fmt_args(), now - ttl_minutes * 60, TTL_FAILURE.format(ttl=ttl_minutes), data_ttl],
        )
        return int(reply[0]), [str(r) for r in reply[1:]]
