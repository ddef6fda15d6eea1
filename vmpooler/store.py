"""Redis data access: every read and write of vmpooler state goes through ``Store``.

Multi-key transitions are Lua scripts (Redis runs a script alone, so no other client ever sees half of
one) or MULTI/EXEC. Key names come from ``vmpooler.keys`` only; the scripts receive them as KEYS or as
prefixes in ARGV so that no key is spelled here.

Every public method raises ``StoreUnavailable`` when Redis cannot be reached; redis-py reconnects by
itself on the next call, so callers recover without doing anything.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import attrs
import redis as redis_lib

from vmpooler import bus, keys
from vmpooler.errors import PoolEmpty, StoreError, StoreUnavailable
from vmpooler.model import VMState, check_transition

__all__ = ["Allocation", "Pick", "PoolCounts", "Store", "connect"]

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


def _translated(func: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn redis-py's connection errors into ``StoreUnavailable``."""

    @functools.wraps(func)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return func(*args, **kwargs)
        except _DISCONNECTED as exc:
            raise StoreUnavailable(f"redis unavailable: {exc}") from exc
        except redis_lib.RedisError as exc:
            raise StoreError(f"redis error: {exc}") from exc

    return wrapper


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
class PoolCounts:
    ready: int = 0
    running: int = 0
    pending: int = 0
    completed: int = 0


# Per pool, KEYS holds (ready, running, migrating, active) in this order.
_KEYS_PER_POOL = 4

# ARGV: now, token, user, lifetime, vm-hash prefix, npools, npools * (pool, channel), npicks,
#       npicks * (requested, ncand, ncand * pool index), deadline (Redis time, ms).
# Returns {1, requested, pool index, vm, ...}, {0, requested that could not be met}, or {-1} when the
# script runs after its deadline: its client gave up on it (a frozen Redis), so it must change nothing.
_CHECKOUT_LUA = """
redis.replicate_commands()
local clock = redis.call('TIME')
if tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return {-1}
end
local now, token, user, lifetime, vmprefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local npools = tonumber(ARGV[6])
local pools, channels = {}, {}
for i = 1, npools do
  pools[i] = ARGV[5 + 2 * i]
  channels[i] = ARGV[6 + 2 * i]
end
local pos = 7 + 2 * npools
local npicks = tonumber(ARGV[pos])
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
for _, t in ipairs(taken) do
  local idx, vm = t[1], t[2]
  local base = 4 * (idx - 1)
  redis.call('SADD', KEYS[base + 2], vm)
  redis.call('SADD', KEYS[base + 3], vm)
  redis.call('HSET', KEYS[base + 4], vm, now)
  local h = vmprefix .. vm
  redis.call('HSET', h, 'checkout', now)
  if token ~= '' then
    redis.call('HSET', h, 'token:token', token, 'token:user', user)
  end
  if lifetime ~= '' then
    redis.call('HSET', h, 'lifetime', lifetime)
  end
  redis.call('PUBLISH', channels[idx], cjson.encode({event = 'checkout', pool = pools[idx], vm = vm}))
  result[#result + 1] = t[3]
  result[#result + 1] = pools[idx]
  result[#result + 1] = vm
end
return result
"""

# KEYS: running, completed. ARGV: vm, channel, event JSON.
_RETURN_LUA = """
if redis.call('SMOVE', KEYS[1], KEYS[2], ARGV[1]) == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""


class _RedisClock:
    """Redis's clock as seen from here: the offset of ``TIME`` to ``time.time()``, sampled every minute.

    A checkout carries a deadline in Redis's own time, so the hosts' clocks need not agree.
    """

    _EVERY = 60.0

    def __init__(self) -> None:
        self._offset_ms = 0.0
        self._sampled = -float("inf")
        self._lock = threading.Lock()

    def deadline_ms(self, client: Any, timeout: float) -> int:
        """Redis time, in ms, after which a script sent now must not act: now + ``timeout``."""
        now = time.monotonic()
        if now - self._sampled > self._EVERY:
            with self._lock:
                if now - self._sampled > self._EVERY:
                    before = time.time()
                    seconds, micros = client.time()
                    after = time.time()
                    self._offset_ms = seconds * 1000 + micros / 1000 - (before + after) * 500
                    self._sampled = now
        return int(time.time() * 1000 + self._offset_ms + timeout * 1000)


class Store:
    """All Redis access of the API and the manager.

    Args:
        client: a redis-py client decoding responses to ``str`` (see ``connect``).
    """

    def __init__(self, client: redis_lib.Redis) -> None:
        # redis-py types replies as bytes | str; ``connect`` decodes them, so they are all str.
        self._redis: Any = client
        self._checkout_script = client.register_script(_CHECKOUT_LUA)
        self._return_script = client.register_script(_RETURN_LUA)
        kwargs = client.connection_pool.connection_kwargs
        self._reply_timeout = float(kwargs.get("socket_timeout") or 10.0)
        self._clock = _RedisClock()

    @classmethod
    def from_url(
        cls, url: str, *, max_connections: int = 10, pool_timeout: float = 5.0, socket_timeout: float = 10.0
    ) -> Store:
        return cls(
            connect(
                url, max_connections=max_connections, pool_timeout=pool_timeout, socket_timeout=socket_timeout
            )
        )

    @property
    def client(self) -> redis_lib.Redis:
        """The underlying client, for the pub/sub bus and for tests."""
        return self._redis

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()

    @_translated
    def ping(self) -> bool:
        return bool(self._redis.ping())

    # -- checkout and return -------------------------------------------------------------------

    @_translated
    def checkout(
        self,
        picks: Sequence[Pick],
        *,
        now: str,
        token: str | None = None,
        user: str | None = None,
        lifetime: int | None = None,
    ) -> list[Allocation]:
        """Hand out one ready VM per pick, all or none, in one atomic step.

        Each pick tries its candidate pools in order. Handed-out VMs are moved to ``running`` and
        ``migrating``, get ``checkout`` (and the token fields and lifetime when given) and a
        ``checkout`` event is published on their pool's channel.

        Raises:
            PoolEmpty: a pick found no ready VM in any candidate; nothing was changed.
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
        argv.append(self._clock.deadline_ms(self._redis, self._reply_timeout))
        reply = self._checkout_script(keys=script_keys, args=argv)
        if int(reply[0]) == -1:  # ran after we stopped waiting (this request already answered 503)
            raise StoreUnavailable("redis answered a checkout after its deadline; nothing was changed")
        if int(reply[0]) == 0:
            raise PoolEmpty(reply[1])
        return [Allocation(reply[i], reply[i + 1], reply[i + 2]) for i in range(1, len(reply), 3)]

    @_translated
    def return_vm(self, vm: str, pool: str) -> bool:
        """Move a running VM to completed and publish a ``return`` event.

        Returns:
            False if the VM was not running (nothing changed).
        """
        check_transition(VMState.RUNNING, VMState.COMPLETED)
        event = bus.encode(bus.Returned(pool=pool, vm=vm))
        moved = self._return_script(
            keys=[keys.running_set(pool), keys.completed_set(pool)],
            args=[vm, keys.events_channel(pool), event],
        )
        return bool(moved)

    @_translated
    def running_pool_of(self, vm: str, pools: Iterable[str]) -> str | None:
        """The pool whose running set holds ``vm`` (for VMs whose hash names no pool)."""
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                pipe.sismember(keys.running_set(pool), vm)
            found = pipe.execute()
        return next((pool for pool, hit in zip(names, found, strict=True) if hit), None)

    # -- VM metadata -----------------------------------------------------------------------------

    @_translated
    def get_vm(self, vm: str) -> dict[str, str]:
        """The VM's metadata hash; empty when the VM is unknown."""
        return dict(self._redis.hgetall(keys.vm_hash(vm)))

    @_translated
    def modify_vm(self, vm: str, *, lifetime: int | None, tags: Mapping[str, str], date: str) -> None:
        """Write a new lifetime and/or tags in one MULTI (tags also feed the ``date`` tag stats)."""
        with self._redis.pipeline(transaction=True) as pipe:
            if lifetime is not None:
                pipe.hset(keys.vm_hash(vm), "lifetime", lifetime)
            for name, value in tags.items():
                pipe.hset(keys.vm_hash(vm), f"tag:{name}", value)
                pipe.hset(keys.tag_stats(date), f"{vm}:{name}", value)
            pipe.execute()

    @_translated
    def queue_task(self, kind: str, vm: str, pool: str, argument: str) -> None:
        """Queue a disk (``kind="disk"``), snapshot or revert request for the manager.

        Adds ``<vm>:<argument>`` to the task set and publishes a ``task`` event on the pool channel.
        """
        task_set = {
            "disk": keys.TASKS_DISK,
            "snapshot": keys.TASKS_SNAPSHOT,
            "snapshot-revert": keys.TASKS_SNAPSHOT_REVERT,
        }[kind]
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(task_set, f"{vm}:{argument}")
            pipe.publish(
                keys.events_channel(pool),
                bus.encode(bus.TaskQueued(pool=pool, vm=vm, task=kind, argument=argument)),
            )
            pipe.execute()

    # -- pools and statistics --------------------------------------------------------------------

    @_translated
    def pool_counts(self, pools: Iterable[str]) -> dict[str, PoolCounts]:
        """Set sizes of every pool in one round trip."""
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                for state in ("ready", "running", "pending", "completed"):
                    pipe.scard(keys.state_set(state, pool))
            sizes = pipe.execute()
        return {pool: PoolCounts(*sizes[4 * i : 4 * i + 4]) for i, pool in enumerate(names)}

    @_translated
    def ready_counts(self, pools: Iterable[str]) -> dict[str, int]:
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                pipe.scard(keys.ready_set(pool))
            return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))

    @_translated
    def running_total(self, pools: Iterable[str]) -> int:
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.scard(keys.running_set(pool))
            return sum(int(n) for n in pipe.execute())

    @_translated
    def task_counters(self) -> tuple[int, int]:
        """In-flight (pool clones, on-demand clones)."""
        clone, ondemand = self._redis.mget(keys.TASKS_CLONE, keys.TASKS_ONDEMANDCLONE)
        return _to_int(clone), _to_int(ondemand)

    @_translated
    def requested_count(self) -> int:
        """On-demand VMs asked for but not yet cloning (request + processing queues)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zcard(keys.PROVISIONING_REQUEST)
            pipe.zcard(keys.PROVISIONING_PROCESSING)
            return sum(int(n) for n in pipe.execute())

    @_translated
    def lastboot(self) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.LASTBOOT))

    @_translated
    def daily_hashes(self, kind: str, dates: Sequence[str]) -> list[dict[str, str]]:
        """The ``clone``, ``boot`` or ``tag`` stats hash of each date, in one round trip."""
        key_of = {"clone": keys.clone_stats, "boot": keys.boot_stats, "tag": keys.tag_stats}[kind]
        with self._redis.pipeline(transaction=False) as pipe:
            for date in dates:
                pipe.hgetall(key_of(date))
            return [dict(h) for h in pipe.execute()]

    @_translated
    def overrides(self, kind: str) -> dict[str, str]:
        """Pool → override value from ``vmpooler__config__<kind>``."""
        return dict(self._redis.hgetall(keys.config_override(kind)))

    @_translated
    def prepared_templates(self) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.TEMPLATE_PREPARED))

    # -- tokens ----------------------------------------------------------------------------------

    @_translated
    def get_token(self, token: str) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.token(token)))

    @_translated
    def touch_token(self, token: str, now: str) -> None:
        self._redis.hset(keys.token(token), "last", now)

    @_translated
    def create_token(self, token: str, user: str, now: str) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.token(token), mapping={"user": user, "created": now})
            pipe.sadd(keys.user_tokens(user), token)
            pipe.execute()

    @_translated
    def delete_token(self, token: str) -> bool:
        user = self._redis.hget(keys.token(token), "user")
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(keys.token(token))
            if user is not None:
                pipe.srem(keys.user_tokens(user), token)
            return bool(pipe.execute()[0])

    @_translated
    def tokens_of_user(self, user: str) -> dict[str, dict[str, str]]:
        """Every token of ``user`` with its fields, read through the per-user index."""
        if not self._redis.exists(keys.USER_TOKENS_INDEXED):
            self._index_tokens()
        tokens = sorted(self._redis.smembers(keys.user_tokens(user)))
        with self._redis.pipeline(transaction=False) as pipe:
            for token in tokens:
                pipe.hgetall(keys.token(token))
            found = dict(zip(tokens, pipe.execute(), strict=True))
        stale = [token for token, data in found.items() if data.get("user") != user]
        if stale:  # deleted (or reassigned) by a process that does not keep the index: the original
            self._redis.srem(keys.user_tokens(user), *stale)
        return {token: dict(data) for token, data in found.items() if token not in stale}

    def _index_tokens(self) -> None:
        """Index every existing token by user, once (tokens made by the original or an older version)."""
        prefix_len = len(keys.token(""))
        cursor: int | str = 0
        while True:  # one SCAN page, its users in one pipeline, their index entries in another
            cursor, found = self._redis.scan(cursor, match=keys.token_pattern(), count=2_000)
            with self._redis.pipeline(transaction=False) as pipe:
                for key in found:
                    pipe.hget(key, "user")
                users = pipe.execute()
            with self._redis.pipeline(transaction=False) as pipe:
                for key, user in zip(found, users, strict=True):
                    if user is not None:
                        pipe.sadd(keys.user_tokens(user), key[prefix_len:])
                pipe.execute()
            if not int(cursor):
                break
        self._redis.set(keys.USER_TOKENS_INDEXED, "1")

    @_translated
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


def _to_int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
