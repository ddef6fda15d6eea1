"""On-demand requests, the API's side: create one, read its status, delete it.

A request is the original's hash ``vmpooler__odrequest__<id>`` whose ``requested`` field is the platform
string ``"<alias>:<pool>:<n>,..."``; the VMs given to it wait in one set per (alias, pool),
``vmpooler__<id>__<alias>__<pool>``, filled by the manager. See docs/architecture.md, "On-demand
requests" (this module is the rows ``create``, ``delete`` and ``status``).

The scripts build the VM-set keys from the platform string, so they receive each key's fixed parts in
ARGV (made by ``vmpooler.keys`` with markers where the variable parts go) and spell no key themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import attrs

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["DELETED_TTL", "OnDemand", "Platform", "RequestStatus", "parse_platforms"]

DELETED_TTL = 1_296_000  # seconds a deleted request's hash is kept (15 days, as the original)

_ALIAS_MARK = "\x00alias\x00"
_POOL_MARK = "\x00pool\x00"

# KEYS: request hash, provisioning request zset. ARGV: id, now, requested, token, user, channel prefix,
# priority, pools... -> 0 if the id exists. The ``ondemand`` events match ``bus.OnDemandQueued``.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'requested', ARGV[3])
if ARGV[7] ~= '2' then redis.call('HSET', KEYS[1], 'priority', ARGV[7]) end
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[1], 'token:token', ARGV[4], 'token:user', ARGV[5])
end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
for i = 8, #ARGV do
  local event = {event = 'ondemand', pool = ARGV[i], request_id = ARGV[1]}
  redis.call('PUBLISH', ARGV[6] .. ARGV[i], cjson.encode(event))
end
return 1
"""

# The platform string's entries, as ``parse_platforms`` reads them: alias up to the first colon, count
# after the last one, the pool in between.
_PLATFORMS = """
local function platforms(requested)
  local found = {}
  for entry in string.gmatch(requested, '[^,]+') do
    local alias, pool, count = string.match(entry, '^([^:]*):(.*):([^:]*)$')
    if alias then found[#found + 1] = {alias, pool} end
  end
  return found
end
local function vm_set(alias, pool)
  return ARGV[1] .. alias .. ARGV[2] .. pool .. ARGV[3]
end
"""

# KEYS: request hash. ARGV: the VM-set key's parts (3). -> {} if unknown, else {hash fields and
# values, {members of the VM set of each platform, in the platform string's order}}.
_STATUS = (
    _PLATFORMS
    + """
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return {} end
local sets = {}
local requested = redis.call('HGET', KEYS[1], 'requested') or ''
for i, p in ipairs(platforms(requested)) do
  sets[i] = redis.call('SMEMBERS', vm_set(p[1], p[2]))
end
return {fields, sets}
"""
)

# KEYS: request hash, provisioning request zset, provisioning processing zset, odcreate task zset.
# ARGV: the VM-set key's parts (3), running prefix, completed prefix, active prefix, channel prefix,
# request id, ttl. -> 'missing', 'already' or 'deleted'.
_DELETE = (
    _PLATFORMS
    + """
local requested = redis.call('HGET', KEYS[1], 'requested')
if not requested then return 'missing' end
if redis.call('HGET', KEYS[1], 'status') == 'deleted' then return 'already' end
redis.call('HSET', KEYS[1], 'status', 'deleted')
for _, p in ipairs(platforms(requested)) do
  local pool, set = p[2], vm_set(p[1], p[2])
  for _, vm in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('SMOVE', ARGV[4] .. pool, ARGV[5] .. pool, vm) == 1 then
      redis.call('HDEL', ARGV[6] .. pool, vm)
      redis.call('PUBLISH', ARGV[7] .. pool, cjson.encode({event = 'return', pool = pool, vm = vm}))
    end
  end
  redis.call('DEL', set)
end
local id = ARGV[8]
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
local suffix = ':' .. id
for _, task in ipairs(redis.call('ZRANGE', KEYS[4], 0, -1)) do
  if string.sub(task, -#suffix) == suffix then redis.call('ZREM', KEYS[4], task) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[9]))
return 'deleted'
"""
)


@attrs.frozen
class Platform:
    """One entry of a request's platform string, with the VMs given to it so far."""

    alias: str
    pool: str
    count: int
    vms: frozenset[str] = frozenset()


@attrs.frozen(kw_only=True)
class RequestStatus:
    """An on-demand request as stored.

    Attributes:
        status: ``ready``, ``failed`` or ``deleted``; None while it is being filled.
        platforms: the requested (alias, pool, count) entries, each with the members of its VM set.
    """

    request_id: str
    platforms: tuple[Platform, ...]
    status: str | None = None
    failure_reason: str | None = None
    token: str | None = None
    user: str | None = None


def parse_platforms(requested: str) -> list[tuple[str, str, int]]:
    """``"<alias>:<pool>:<n>,..."`` → ``[(alias, pool, n), ...]``; malformed entries are skipped."""
    found = []
    for entry in requested.split(","):
        rest, colon, count = entry.rpartition(":")
        alias, colon2, pool = rest.partition(":")
        if not colon or not colon2:
            continue
        found.append((alias, pool, int(count) if count.isdecimal() else 0))
    return found


def _vm_set_parts(request_id: str) -> list[str]:
    """The fixed parts of ``keys.odrequest_vms(request_id, alias, pool)``, around alias and pool.

    The last markers are the real ones (the id comes first), whatever characters the id holds.
    """
    template = keys.odrequest_vms(request_id, _ALIAS_MARK, _POOL_MARK)
    before_pool, _, tail = template.rpartition(_POOL_MARK)
    head, _, middle = before_pool.rpartition(_ALIAS_MARK)
    return [head, middle, tail]


class OnDemand:
    """Create, read and delete on-demand requests (the API; the manager fills them)."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._create = client.register_script(_CREATE)
        self._status = client.register_script(_STATUS)
        self._delete = client.register_script(_DELETE)

    @translated
    def create(
        self,
        request_id: str,
        platforms: Sequence[tuple[str, str, int]],
        now_epoch: float,
        token: str | None = None,
        user: str | None = None,
        priority: int = 2,
    ) -> bool:
        """Record a new request and wake the pools it names, in one script.

        Writes ``requested`` (and ``token:token``/``token:user`` when ``token`` is given, ``priority``
        when it is not 2: the intake orders the request's clones by it), adds the id
        to ``vmpooler__provisioning__request`` scored ``now_epoch``, and publishes an ``ondemand``
        event on the channel of each distinct pool.

        Returns:
            False when a request with this id exists (or existed and is still kept): nothing written.
        """
        requested = ",".join(f"{alias}:{pool}:{count}" for alias, pool, count in platforms)
        pools = list(dict.fromkeys(pool for _, pool, _ in platforms))
        created = self._create(
            keys=[keys.odrequest(request_id), keys.PROVISIONING_REQUEST],
            args=[
                request_id,
                int(now_epoch),
                requested,
                token or "",
                user or "",
                keys.events_channel(""),
                priority,
                *pools,
            ],
        )
        return bool(created)

    @translated
    def waiting_by_priority(self) -> dict[int, int]:
        """Requests still being provisioned (new or in processing), counted by priority (``GET /queue``)."""
        ids = [*self._redis.zrange(keys.PROVISIONING_REQUEST, 0, -1)]
        ids += self._redis.zrange(keys.PROVISIONING_PROCESSING, 0, -1)
        with self._redis.pipeline(transaction=False) as pipe:
            for request_id in ids:
                pipe.hget(keys.odrequest(request_id), "priority")
            priorities = pipe.execute()
        counts: dict[int, int] = {}
        for priority in priorities:
            level = int(priority or 2)
            counts[level] = counts.get(level, 0) + 1
        return counts

    @translated
    def status(self, request_id: str) -> RequestStatus | None:
        """The request's hash and the members of each of its VM sets, in one script; None if unknown."""
        reply = self._status(keys=[keys.odrequest(request_id)], args=_vm_set_parts(request_id))
        if not reply:
            return None
        flat, sets = reply
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        parsed = parse_platforms(fields.get("requested", ""))
        platforms = tuple(
            Platform(alias, pool, count, frozenset(members))
            for (alias, pool, count), members in zip(parsed, sets, strict=True)
        )
        return RequestStatus(
            request_id=request_id,
            platforms=platforms,
            status=fields.get("status"),
            failure_reason=fields.get("failure_reason"),
            token=fields.get("token:token"),
            user=fields.get("token:user"),
        )

    @translated
    def delete(self, request_id: str) -> Literal["missing", "already", "deleted"]:
        """Mark the request deleted and return its VMs, in one script.

        Each VM of its sets that is running moves to its pool's ``completed`` (out of the active hash,
        with a ``return`` event, as a returned VM); the sets are deleted, the id leaves the provisioning
        queues and its queued clone tasks, and the hash expires in ``DELETED_TTL`` seconds.

        Returns:
            ``"missing"`` (no such request), ``"already"`` (deleted before: nothing changed) or
            ``"deleted"``.
        """
        reply = self._delete(
            keys=[
                keys.odrequest(request_id),
                keys.PROVISIONING_REQUEST,
                keys.PROVISIONING_PROCESSING,
                keys.ODCREATE_TASK,
            ],
            args=[
                *_vm_set_parts(request_id),
                keys.running_set(""),
                keys.completed_set(""),
                keys.active_hash(""),
                keys.events_channel(""),
                request_id,
                DELETED_TTL,
            ],
        )
        result: Literal["missing", "already", "deleted"] = reply
        return result
