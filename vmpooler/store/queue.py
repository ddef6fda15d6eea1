"""Checkouts that wait: the queue of waiting requests, its dispatch, and what it shows.

A waiting checkout is recorded (``enqueue``) and a dispatch runs in the same MULTI. A dispatch walks the
queue by priority (1 first); within a priority, the tenant holding the fewest running VMs for its
weight goes first, among equals the one served least for its weight lately (``keys.TENANT_PASS``:
stride scheduling, so tenants whose VMs come back quickly still share by weight), FIFO within a
tenant; a tenant at its quota is skipped (it waits, and blocks nobody). Each request gets every VM
it asked for or none (all-or-nothing in one script, so two multi-pool requests never hold part of what
the other needs). A request that cannot be served whole keeps the pools it needs from every request
after it in that order, so a multi-pool request is not starved by single ones. Served → its VMs are
handed out as by an immediate checkout, its hash says ``served`` with the VMs, and
its id is published on ``keys.QUEUE_CHANNEL``.

A dispatch runs after every enqueue, every VM that turns ready, every return (a quota may free up) and
every cancel, by whichever process caused it (``dispatch_after``). A request whose API worker stopped
beating (``keys.queue_worker``) or whose deadline passed 30 s ago is dropped by the next dispatch that
looks at it (the manager sweeps pools with waiting demand and no ready VM every 10 s), so a crashed
worker's waiters never take VMs and their demand does not stay. Times are Redis's own clock.

Keys: ``keys.QUEUE`` (zset id → priority × 10¹³ + enqueue ms), ``keys.queue_request(id)`` (hash),
``keys.QUEUE_DEMAND`` (pool → VMs wanted, by the first candidate of each pick: what the manager clones
for), ``keys.QUEUE_WANTED`` (pool → picks listing it as any candidate: whether a dispatch has work).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from vmpooler import keys
from vmpooler.store.connection import translated
from vmpooler.store.vms import Allocation, Pick
from vmpooler.store.writes import HAND_OUT, RELEASE_TENANT, TAKE_BACK

if TYPE_CHECKING:
    from vmpooler.config import Config

__all__ = ["QueueRequest", "QueueSettings", "QueueView", "Queues", "decode_vms"]

_BAND = 10**13  # a score's priority part: priority * _BAND + enqueue epoch ms
_DROP_GRACE_MS = 30_000  # a request this long past its deadline is dropped by any dispatch

# Picks, as stored: one line per pick, "requested<TAB>pool<TAB>pool...".
_PICKS_LUA = """
local function parse_picks(text)
  local picks = {}
  for line in string.gmatch(text, '[^\\n]+') do
    local pick = {pools = {}}
    for part in string.gmatch(line, '[^\\t]+') do
      if pick.requested == nil then pick.requested = part else pick.pools[#pick.pools + 1] = part end
    end
    picks[#picks + 1] = pick
  end
  return picks
end

-- demand counts the first candidate of each pick, wanted every candidate; sign 1 or -1
local function count_picks(picks, sign, demand, wanted)
  for _, pick in ipairs(picks) do
    local first = pick.pools[1]
    if redis.call('HINCRBY', demand, first, sign) <= 0 then redis.call('HDEL', demand, first) end
    for _, pool in ipairs(pick.pools) do
      if redis.call('HINCRBY', wanted, pool, sign) <= 0 then redis.call('HDEL', wanted, pool) end
    end
  end
end
"""

# The VMs served to a request whose client is gone go back to ready (those still running for it).
# o: {vm, ready, running, migrating, active (prefixes), held, counts}. Needs RELEASE_TENANT and TAKE_BACK.
# -> VMs back
_GIVE_BACK_LUA = """
local function give_back(vms, o)
  local back = 0
  for line in string.gmatch(vms or '', '[^\\n]+') do
    local _, pool, vm = string.match(line, '^([^\\t]*)\\t([^\\t]*)\\t(.*)$')
    back = back + take_back(vm, {ready = o.ready .. pool, running = o.running .. pool,
      migrating = o.migrating .. pool, active = o.active .. pool, hash = o.vm .. vm, held = o.held,
      counts = o.counts})
  end
  return back
end
"""

# The index of waiting requests by priority and tenant, so that a dispatch reads the heads of the
# tenants instead of the whole queue: a zset of ids per (priority, tenant), a set of tenants per priority.
# tp, sp: the two key prefixes (keys.QUEUE_BY_TENANT, keys.QUEUE_TENANTS).
_INDEX_LUA = """
local function index_add(tp, sp, band, tenant, id, score)
  redis.call('ZADD', tp .. band .. '__' .. tenant, score, id)
  redis.call('SADD', sp .. band, tenant)
end

local function index_remove(tp, sp, band, tenant, id)
  local z = tp .. band .. '__' .. tenant
  redis.call('ZREM', z, id)
  if redis.call('ZCARD', z) == 0 then redis.call('SREM', sp .. band, tenant) end
end
"""

# KEYS: queue, demand, wanted, request hash. ARGV: id, priority, picks, tenant, token, user, lifetime,
# wait ms, worker, pool channel prefix. -> 1, or 0 when the id is taken. Times are Redis's (hosts' clocks
# need not agree): score = priority * 10^13 + now ms, deadline = now + wait. The hash has no TTL while
# the request waits (it leaves the queue served, cancelled or dropped, and only then expires).
# Publishes a 'demand' event on the channel of each pool the request wants first.
_ENQUEUE = (
    _PICKS_LUA
    + _INDEX_LUA
    + """
redis.replicate_commands()
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('HSET', KEYS[4], 'picks', ARGV[3], 'tenant', ARGV[4], 'priority', ARGV[2], 'token', ARGV[5],
  'user', ARGV[6], 'lifetime', ARGV[7], 'deadline', now_ms + tonumber(ARGV[8]), 'worker', ARGV[9],
  'enqueued', now_ms, 'status', 'waiting')
redis.call('ZADD', KEYS[1], tonumber(ARGV[2]) * 1e13 + now_ms, ARGV[1])
index_add(ARGV[11], ARGV[12], ARGV[2], ARGV[4], ARGV[1], tonumber(ARGV[2]) * 1e13 + now_ms)
local picks = parse_picks(ARGV[3])
count_picks(picks, 1, KEYS[2], KEYS[3])
local told = {}
for _, pick in ipairs(picks) do
  local pool = pick.pools[1]
  if not told[pool] then
    told[pool] = true
    redis.call('PUBLISH', ARGV[10] .. pool, cjson.encode({event = 'demand', pool = pool}))
  end
end
return 1
"""
)

# KEYS: queue, demand, wanted, tenant counts, tenant held, tenant passes, virtual time, served.
# ARGV: now (checkout text), sweep ('1': look at every request even when no pool has a ready VM, to drop
#       the dead ones), request prefix, vm prefix, ready prefix, running prefix, migrating
#       prefix, active prefix, pool channel prefix, queue channel, worker prefix, drop grace ms, index
#       prefixes (2), default quota ('' none), ntenants, ntenants * (name, weight, quota or '').
# -> {id, vms, id, vms, ...} of the requests served ("requested\tpool\tvm" lines).
_DISPATCH = (
    _PICKS_LUA
    + _INDEX_LUA
    + HAND_OUT
    + RELEASE_TENANT
    + TAKE_BACK
    + _GIVE_BACK_LUA
    + """
redis.replicate_commands()
local Q, DEMAND, WANTED, COUNTS, HELD = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local PASS, VTIME, SERVED = KEYS[6], KEYS[7], KEYS[8]
local now, sweep = ARGV[1], ARGV[2] == '1'
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local RQ, VM, READY, RUNNING, MIGRATING, ACTIVE, CHANNEL, QCHANNEL, WORKER =
  ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local grace = tonumber(ARGV[12])
local TP, SP = ARGV[13], ARGV[14]
local default_quota = tonumber(ARGV[15])
local weights, quotas = {}, {}
for i = 0, tonumber(ARGV[16]) - 1 do
  local name = ARGV[17 + 3 * i]
  weights[name] = tonumber(ARGV[18 + 3 * i])
  quotas[name] = tonumber(ARGV[19 + 3 * i])
end

-- requests served more than 5 s ago and not yet answered: if their API worker is gone, so is their
-- client, and their VMs go back to ready (an API worker answers at once, or gives them back itself)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', SERVED, '-inf', now_ms - 5000, 'LIMIT', 0, 100)) do
  local f = redis.call('HMGET', RQ .. id, 'status', 'worker', 'vms', 'served')
  if f[1] ~= 'served' then
    redis.call('ZREM', SERVED, id)
  elseif redis.call('EXISTS', WORKER .. f[2]) == 0 then
    give_back(f[3], {vm = VM, ready = READY, running = RUNNING, migrating = MIGRATING, active = ACTIVE,
      held = HELD, counts = COUNTS})
    redis.call('HSET', RQ .. id, 'status', 'gone')
    redis.call('EXPIRE', RQ .. id, 300)
    redis.call('ZREM', SERVED, id)
  elseif now_ms - tonumber(f[4] or '0') > 600000 then
    redis.call('ZREM', SERVED, id)  -- its worker lives: it answered long ago and could not say so
  end
end

if redis.call('ZCARD', Q) == 0 then return {} end

local avail = {}
local function avail_of(pool)
  local n = avail[pool]
  if n == nil then
    n = redis.call('SCARD', READY .. pool)
    avail[pool] = n
  end
  return n
end

-- work only if a pool some waiting pick lists has a ready VM
local wanted = redis.call('HGETALL', WANTED)
local work = false
for i = 1, #wanted, 2 do
  if tonumber(wanted[i + 1]) > 0 and avail_of(wanted[i]) > 0 then
    work = true
    break
  end
end
if not work and not sweep then return {} end

local function drop(id, picks, band, tenant)
  redis.call('ZREM', Q, id)
  index_remove(TP, SP, band, tenant, id)
  if picks then count_picks(picks, -1, DEMAND, WANTED) end
  if redis.call('EXISTS', RQ .. id) == 1 then
    redis.call('HSET', RQ .. id, 'status', 'gone')
    redis.call('EXPIRE', RQ .. id, 300)
  end
end

-- a request as the scan keeps it: nil when it is dropped (its worker is gone, its deadline long past)
-- or touches no pool with a ready VM (it cannot be served now and holds nothing back)
local live = {}
local function look(id, score, band, tenant)
  local f = redis.call('HMGET', RQ .. id, 'picks', 'worker', 'deadline')
  if not f[1] then
    redis.call('ZREM', Q, id)  -- its hash is gone: nothing left to count down
    index_remove(TP, SP, band, tenant, id)
    return nil, true
  end
  local picks = parse_picks(f[1])
  local alive = live[f[2]]
  if alive == nil then
    alive = redis.call('EXISTS', WORKER .. f[2]) == 1
    live[f[2]] = alive
  end
  if not alive or now_ms > tonumber(f[3]) + grace then
    drop(id, picks, band, tenant)
    return nil, true
  end
  for _, pick in ipairs(picks) do
    for _, pool in ipairs(pick.pools) do
      if avail_of(pool) > 0 then return {id = id, score = score, picks = picks}, false end
    end
  end
  return nil, false
end

-- by band, the tenants with requests waiting; a tenant's requests are read in order, a few at a time,
-- as far as the dispatch needs (its index); a sweep reads the whole queue instead, to drop the dead
local bands, band_list = {}, {}
local function band_of(b)
  local band = bands[b]
  if band == nil then
    band = {tenants = {}, order = {}}
    bands[b] = band
    band_list[#band_list + 1] = b
  end
  return band
end
local function tenant_of(band, b, name)
  local t = band.tenants[name]
  if t == nil then
    t = {name = name, reqs = {}, next = 1, band = b, offset = 0}
    band.tenants[name] = t
    band.order[#band.order + 1] = t
  end
  return t
end
if sweep then
  local entries = redis.call('ZRANGE', Q, 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    local id, score = entries[i], tonumber(entries[i + 1])
    local b = math.floor(score / 1e13)
    local tenant = redis.call('HGET', RQ .. id, 'tenant') or ''
    local req = look(id, score, b, tenant)
    if req then
      local t = tenant_of(band_of(b), b, tenant)
      t.reqs[#t.reqs + 1] = req
    end
  end
  for _, band in pairs(bands) do
    for _, t in ipairs(band.order) do t.done_reading = true end
  end
else
  for b = 1, 3 do
    for _, name in ipairs(redis.call('SMEMBERS', SP .. b)) do tenant_of(band_of(b), b, name) end
  end
end
table.sort(band_list)

-- the tenant's next request that a ready VM could serve, reading its index further when needed
local function head_of(t)
  while t.reqs[t.next] == nil and not t.done_reading do
    local z = TP .. t.band .. '__' .. t.name
    local page = redis.call('ZRANGE', z, t.offset, t.offset + 15, 'WITHSCORES')
    if #page == 0 then
      t.done_reading = true
    else
      for i = 1, #page, 2 do
        local req, removed = look(page[i], tonumber(page[i + 1]), t.band, t.name)
        if removed then t.offset = t.offset - 1 end
        if req then t.reqs[#t.reqs + 1] = req end
      end
      t.offset = t.offset + #page / 2
    end
  end
  return t.reqs[t.next]
end

local running = {}
local function running_of(tenant)
  local n = running[tenant]
  if n == nil then
    n = tonumber(redis.call('HGET', COUNTS, tenant) or '0')
    running[tenant] = n
  end
  return n
end

local blocked = {}
local function open_pools()
  for pool, n in pairs(avail) do
    if n > 0 and not blocked[pool] then return true end
  end
  return false
end

-- take one VM per pick from pools not blocked, or none
local function take(picks)
  local taken = {}
  for _, pick in ipairs(picks) do
    local got = nil
    for _, pool in ipairs(pick.pools) do
      if got == nil and not blocked[pool] and avail_of(pool) > 0 then
        local vm = redis.call('SPOP', READY .. pool)
        if vm then
          avail[pool] = avail[pool] - 1
          got = {pick.requested, pool, vm}
        else
          avail[pool] = 0
        end
      end
    end
    if got == nil then
      for _, t in ipairs(taken) do
        redis.call('SADD', READY .. t[2], t[3])
        avail[t[2]] = avail[t[2]] + 1
      end
      return nil
    end
    taken[#taken + 1] = got
  end
  return taken
end

-- a tenant's pass (stride scheduling): VMs served to it / its weight. The virtual time is the lowest pass
-- of the tenants a dispatch saw waiting; a tenant that joins or comes back from idle starts there, so
-- equal running counts go round robin (by weight) and no idle credit is hoarded.
local vtime = tonumber(redis.call('GET', VTIME) or '0')
local lowest = nil
local function passes_of(band)
  for _, t in ipairs(band.order) do
    t.pass = tonumber(redis.call('HGET', PASS, t.name) or '')
    if t.pass == nil or t.pass < vtime then t.pass = vtime end
  end
end

local served = {}
for _, b in ipairs(band_list) do
  local band = bands[b]
  passes_of(band)
  while open_pools() do
    local best, best_key = nil, nil
    for _, t in ipairs(band.order) do
      local head = (not t.skipped) and head_of(t) or nil
      if head then
        local quota = quotas[t.name]
        if quota == nil and t.name ~= '' then quota = default_quota end
        if quota ~= nil and running_of(t.name) + #head.picks > quota then
          t.skipped = true  -- at its quota: waits, blocks nobody
        else
          -- fewest running VMs for the weight, then the lowest pass, then the oldest request
          local key = {running_of(t.name) / (weights[t.name] or 1), t.pass, head.score}
          local better = best == nil
          if not better then
            for k = 1, 3 do
              if key[k] ~= best_key[k] then
                better = key[k] < best_key[k]
                break
              end
            end
          end
          if better then best, best_key = t, key end
        end
      end
    end
    if best == nil then break end
    if lowest == nil or best.pass < lowest then lowest = best.pass end
    local req = best.reqs[best.next]
    best.next = best.next + 1
    local taken = take(req.picks)
    if taken == nil then
      for _, pick in ipairs(req.picks) do
        for _, pool in ipairs(pick.pools) do blocked[pool] = true end
      end
    else
      local h = RQ .. req.id
      local o = redis.call('HMGET', h, 'token', 'user', 'lifetime')
      local lines = {}
      for _, t in ipairs(taken) do
        local pool, vm = t[2], t[3]
        hand_out(vm, {
          running = RUNNING .. pool, migrating = MIGRATING .. pool, active = ACTIVE .. pool,
          hash = VM .. vm, channel = CHANNEL .. pool, pool = pool, now = now, token = o[1] or '',
          user = o[2] or '', lifetime = o[3] or '', tenant = best.name, held = HELD, counts = COUNTS,
        })
        lines[#lines + 1] = t[1] .. '\\t' .. pool .. '\\t' .. vm
      end
      running[best.name] = running_of(best.name) + #taken
      best.pass = best.pass + #taken / (weights[best.name] or 1)
      redis.call('HSET', PASS, best.name, best.pass)
      redis.call('EXPIRE', PASS, 86400)
      local vms = table.concat(lines, '\\n')
      redis.call('HSET', h, 'status', 'served', 'vms', vms, 'served', now_ms)
      redis.call('EXPIRE', h, 300)
      redis.call('ZREM', Q, req.id)
      index_remove(TP, SP, best.band, best.name, req.id)
      best.offset = best.offset - 1
      redis.call('ZADD', SERVED, now_ms, req.id)
      count_picks(req.picks, -1, DEMAND, WANTED)
      served[#served + 1] = req.id
      served[#served + 1] = vms
    end
  end
end
if lowest ~= nil and lowest > vtime then
  redis.call('SET', VTIME, lowest, 'EX', 86400)
end
if #served > 0 then
  local ids = {}
  for i = 1, #served, 2 do ids[#ids + 1] = served[i] end
  redis.call('PUBLISH', QCHANNEL, table.concat(ids, ','))
end
return served
"""
)

# KEYS: queue, demand, wanted, tenant counts, tenant held, request hash, served. ARGV: id, give_back ('1': the
# client is gone, so VMs already served go back to ready), vm prefix, ready prefix, running prefix,
# migrating prefix, active prefix, index prefixes (2).
# -> {'gone', position} (was waiting), {'served', vms} (served and kept), {'returned', n}, {'unknown'}
_CANCEL = (
    _PICKS_LUA
    + _INDEX_LUA
    + RELEASE_TENANT
    + TAKE_BACK
    + _GIVE_BACK_LUA
    + """
local h = KEYS[6]
local f = redis.call('HMGET', h, 'status', 'picks', 'vms', 'priority', 'tenant')
if f[1] == 'waiting' then
  local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  index_remove(ARGV[8], ARGV[9], f[4], f[5] or '', ARGV[1])
  count_picks(parse_picks(f[2]), -1, KEYS[2], KEYS[3])
  redis.call('HSET', h, 'status', 'gone')
  redis.call('EXPIRE', h, 300)
  return {'gone', rank and rank + 1 or 0}
end
if f[1] == 'served' then
  redis.call('ZREM', KEYS[7], ARGV[1])  -- answered now, one way or the other
  if ARGV[2] ~= '1' then return {'served', f[3]} end
  local back = give_back(f[3], {vm = ARGV[3], ready = ARGV[4], running = ARGV[5], migrating = ARGV[6],
    active = ARGV[7], held = KEYS[5], counts = KEYS[4]})
  redis.call('HSET', h, 'status', 'gone')
  return {'returned', back}
end
return {'unknown'}
"""
)


@attrs.frozen
class QueueSettings:
    """What every dispatch needs from the config: tenant weights and quotas."""

    default_quota: int | None = None
    tenants: tuple[tuple[str, float, int | None], ...] = ()

    @classmethod
    def from_config(cls, config: Config) -> QueueSettings:
        return cls(
            default_quota=config.globals.default_tenant_max_running,
            tenants=tuple((name, t.weight, t.max_running) for name, t in sorted(config.tenants.items())),
        )

    def quota_of(self, tenant: str) -> int | None:
        """The tenant's quota of running VMs; None = unlimited (always for the anonymous tenant '')."""
        for name, _weight, quota in self.tenants:
            if name == tenant and quota is not None:
                return quota
        return None if tenant == "" else self.default_quota

    def argv(self) -> list[Any]:
        argv: list[Any] = ["" if self.default_quota is None else self.default_quota, len(self.tenants)]
        for name, weight, quota in self.tenants:
            argv += [name, weight, "" if quota is None else quota]
        return argv


@attrs.frozen
class QueueRequest:
    """One waiting checkout, as the API records it."""

    request_id: str
    picks: tuple[Pick, ...]
    priority: int = 2
    tenant: str = ""
    token: str | None = None
    user: str | None = None
    lifetime: int | None = None
    wait_seconds: float = 0.0
    worker: str = ""


@attrs.frozen
class QueueView:
    """``GET /queue``: what waits, by pool, priority and tenant (counts of VMs wanted / requests)."""

    depth: int
    by_pool: Mapping[str, int]
    by_priority: Mapping[int, int]
    by_tenant: Mapping[str, int]
    oldest_wait_seconds: float


def decode_vms(text: str) -> list[Allocation]:
    """The ``vms`` of a served request: one ``Allocation`` per line."""
    allocations = []
    for line in text.splitlines():
        requested, pool, vm = line.split("\t")
        allocations.append(Allocation(requested, pool, vm))
    return allocations


def _encode_picks(picks: Sequence[Pick]) -> str:
    return "\n".join("\t".join((pick.requested, *pick.candidates)) for pick in picks)


class Queues:
    """The queue of waiting checkouts (see the module docstring).

    Args:
        client: a redis-py client decoding responses to ``str``.
    """

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._enqueue = client.register_script(_ENQUEUE)
        self._dispatch = client.register_script(_DISPATCH)
        self._cancel = client.register_script(_CANCEL)

    # -- the API ----------------------------------------------------------------------------------------

    @translated
    def enqueue(self, request: QueueRequest, settings: QueueSettings, *, now: str) -> list[Allocation] | None:
        """Record ``request`` and dispatch, in one MULTI.

        Returns:
            Its VMs when the dispatch served it at once, else None (it waits; ``Raises`` nothing).

        Raises:
            ValueError: the request id is already in use.
        """
        added, served = self._then_dispatch(
            self._enqueue,
            [keys.QUEUE, keys.QUEUE_DEMAND, keys.QUEUE_WANTED, keys.queue_request(request.request_id)],
            [
                request.request_id,
                request.priority,
                _encode_picks(request.picks),
                request.tenant,
                request.token or "",
                request.user or "",
                "" if request.lifetime is None else request.lifetime,
                int(request.wait_seconds * 1000),
                request.worker,
                keys.events_channel(""),
                keys.QUEUE_BY_TENANT,
                keys.QUEUE_TENANTS,
            ],
            settings,
            now,
        )
        if not int(added):
            raise ValueError(f"request id {request.request_id!r} is already in use")
        return self._own(served, request.request_id)

    @translated
    def cancel(
        self, request_id: str, settings: QueueSettings, *, now: str, give_back: bool
    ) -> tuple[str, Any]:
        """Stop waiting: ``("gone", position)`` when it was still waiting (taken out of the queue),
        ``("served", allocations)`` when a dispatch served it meanwhile and ``give_back`` is False (the
        caller answers with them), ``("returned", n)`` when it was served and ``give_back`` (its client is
        gone: its VMs went back to ready, never lost, never handed out twice), ``("unknown", None)``.
        A dispatch follows in the same MULTI (a freed pool or VM may serve others)."""
        outcome, _served = self._then_dispatch(
            self._cancel,
            [
                keys.QUEUE,
                keys.QUEUE_DEMAND,
                keys.QUEUE_WANTED,
                keys.TENANT_RUNNING,
                keys.TENANT_HELD,
                keys.queue_request(request_id),
                keys.QUEUE_SERVED,
            ],
            [
                request_id,
                "1" if give_back else "0",
                keys.vm_hash(""),
                keys.ready_set(""),
                keys.running_set(""),
                keys.migrating_set(""),
                keys.active_hash(""),
                keys.QUEUE_BY_TENANT,
                keys.QUEUE_TENANTS,
            ],
            settings,
            now,
        )
        kind = outcome[0]
        if kind == "served":
            return kind, decode_vms(outcome[1])
        if kind in ("gone", "returned"):
            return kind, int(outcome[1])
        return "unknown", None

    @translated
    def served(self, request_ids: Sequence[str]) -> dict[str, list[Allocation]]:
        """The VMs of those of ``request_ids`` that are served (one round trip)."""
        if not request_ids:
            return {}
        with self._redis.pipeline(transaction=False) as pipe:
            for request_id in request_ids:
                pipe.hmget(keys.queue_request(request_id), "status", "vms")
            replies = pipe.execute()
        return {
            request_id: decode_vms(vms)
            for request_id, (status, vms) in zip(request_ids, replies, strict=True)
            if status == "served" and vms
        }

    @translated
    def delivered(self, request_id: str) -> None:
        """The API answers a served request now: no sweep gives its VMs back (see ``_DISPATCH``)."""
        self._redis.zrem(keys.QUEUE_SERVED, request_id)

    @translated
    def forget_worker(self, worker: str) -> None:
        """This API worker stops: its liveness key goes at once, so what it leaves behind is dropped."""
        self._redis.delete(keys.queue_worker(worker))

    @translated
    def beat(self, worker: str, ttl_seconds: int = 6) -> None:
        """This API worker is alive: its waiting requests stay in the queue (see the module docstring)."""
        self._redis.set(keys.queue_worker(worker), "1", ex=ttl_seconds)

    @translated
    def position(self, request_id: str) -> int | None:
        """1-based place of a waiting request in the queue's order of priority and arrival; None when
        it is not waiting."""
        rank = self._redis.zrank(keys.QUEUE, request_id)
        return None if rank is None else int(rank) + 1

    @translated
    def status(self, request_id: str) -> dict[str, str]:
        """A request's hash (empty when unknown or long over)."""
        return dict(self._redis.hgetall(keys.queue_request(request_id)))

    # -- everyone ---------------------------------------------------------------------------------------

    @translated
    def dispatch(self, settings: QueueSettings, *, now: str, sweep: bool = False) -> list[str]:
        """Serve what can be served now; the ids served. ``sweep``: also when no pool a waiting request
        lists has a ready VM, so that the requests of dead workers and long past their deadline go."""
        served = self._dispatch(keys=self._dispatch_keys(), args=self._dispatch_args(settings, now, sweep))
        return [served[i] for i in range(0, len(served), 2)]

    def dispatch_after(self, pipe: Any, settings: QueueSettings, *, now: str) -> None:
        """Add a dispatch to ``pipe`` (a MULTI), after the step that may let a waiting request go."""
        self._dispatch(keys=self._dispatch_keys(), args=self._dispatch_args(settings, now), client=pipe)

    @translated
    def demand(self) -> dict[str, int]:
        """VMs wanted by waiting requests, by pool (a pick's first candidate)."""
        return {pool: int(n) for pool, n in self._redis.hgetall(keys.QUEUE_DEMAND).items() if int(n) > 0}

    @translated
    def summary(self) -> tuple[int, float]:
        """(waiting requests, seconds the longest-waiting one has waited), in one round trip (``/status``)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.QUEUE)
            for priority in (1, 2, 3):
                low = priority * _BAND
                pipe.zrangebyscore(keys.QUEUE, low, low + _BAND - 1, start=0, num=1, withscores=True)
            depth, *heads = pipe.execute()
        enqueued = [int(score) % _BAND for head in heads for _member, score in head]
        oldest = max(0.0, time.time() - min(enqueued) / 1000) if enqueued else 0.0
        return int(depth), oldest

    @translated
    def demand_of(self, pool: str) -> int:
        """VMs wanted of ``pool`` by waiting requests (as their first candidate)."""
        return max(0, int(self._redis.hget(keys.QUEUE_DEMAND, pool) or 0))

    @translated
    def view(self) -> QueueView:
        """The whole queue, counted (``GET /queue``, the metrics, the dashboard)."""
        entries = self._redis.zrange(keys.QUEUE, 0, -1, withscores=True)
        with self._redis.pipeline(transaction=False) as pipe:
            for request_id, _score in entries:
                pipe.hmget(keys.queue_request(request_id), "picks", "tenant")
            fields = pipe.execute()
        by_pool: dict[str, int] = {}
        by_priority: dict[int, int] = {}
        by_tenant: dict[str, int] = {}
        oldest = None
        for (_request_id, score), (picks, tenant) in zip(entries, fields, strict=True):
            if picks is None:
                continue
            priority, enqueued = divmod(int(score), _BAND)
            by_priority[priority] = by_priority.get(priority, 0) + 1
            by_tenant[tenant or ""] = by_tenant.get(tenant or "", 0) + 1
            for line in picks.split("\n"):
                pool = line.split("\t")[1]
                by_pool[pool] = by_pool.get(pool, 0) + 1
            oldest = enqueued if oldest is None else min(oldest, enqueued)
        waited = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
        return QueueView(
            depth=sum(by_priority.values()),
            by_pool=by_pool,
            by_priority=by_priority,
            by_tenant=by_tenant,
            oldest_wait_seconds=waited,
        )

    # -- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _dispatch_keys() -> list[str]:
        return [
            keys.QUEUE,
            keys.QUEUE_DEMAND,
            keys.QUEUE_WANTED,
            keys.TENANT_RUNNING,
            keys.TENANT_HELD,
            keys.TENANT_PASS,
            keys.QUEUE_VTIME,
            keys.QUEUE_SERVED,
        ]

    @staticmethod
    def _dispatch_args(settings: QueueSettings, now: str, sweep: bool = False) -> list[Any]:
        return [
            now,
            "1" if sweep else "0",
            keys.queue_request(""),
            keys.vm_hash(""),
            keys.ready_set(""),
            keys.running_set(""),
            keys.migrating_set(""),
            keys.active_hash(""),
            keys.events_channel(""),
            keys.QUEUE_CHANNEL,
            keys.queue_worker(""),
            _DROP_GRACE_MS,
            keys.QUEUE_BY_TENANT,
            keys.QUEUE_TENANTS,
            *settings.argv(),
        ]

    def _then_dispatch(
        self, script: Any, script_keys: list[str], argv: list[Any], settings: QueueSettings, now: str
    ) -> tuple[Any, list[str]]:
        """``script`` and a dispatch in one MULTI: (the script's reply, the dispatch's)."""
        with self._redis.pipeline(transaction=True) as pipe:
            script(keys=script_keys, args=argv, client=pipe)
            self.dispatch_after(pipe, settings, now=now)
            reply, served = pipe.execute()
        return reply, served

    @staticmethod
    def _own(served: list[str], request_id: str) -> list[Allocation] | None:
        for i in range(0, len(served), 2):
            if served[i] == request_id:
                return decode_vms(served[i + 1])
        return None
