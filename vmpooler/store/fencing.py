"""Writes fenced by a pool's lease: a manager's writes for a pool land only while its lease's fencing token
is the current one (docs/architecture.md, "Several managers").

``FencedRedis`` is the client of one pool's actors for as long as its lease is held (``Store.fenced``).
Every state write it sends is checked by Redis itself, in the same atomic step as the write, against
``vmpooler__lease__<pool>``'s ``token``:

* a registered script gets a prelude that takes the lease key and token it was given last (so the
  script's own ``KEYS`` and ``ARGV`` are as before) and refuses to run on a stale token;
* a plain write command (``HSET``, ``SADD``, ``DEL``...) is sent as one script that checks the token,
  then runs the command; redis-py's reply callbacks apply as before;
* a pipeline with a write in it runs as ``WATCH lease``, a token check, then ``MULTI``...``EXEC``: if the
  lease changes in between, ``EXEC`` does nothing.

A refused write raises redis-py's ``ResponseError("FENCED ...")``, which the store turns into
``vmpooler.errors.Fenced``. Reads are not fenced.
"""

from __future__ import annotations

from typing import Any

import redis as redis_lib
from redis.commands.core import Script

__all__ = ["FENCED", "FencedRedis"]

FENCED = "FENCED"

# the state writes the manager's store parts send as plain commands (not scripts)
_WRITES = frozenset(
    {
        "SET",
        "SETEX",
        "SETNX",
        "GETDEL",
        "DEL",
        "UNLINK",
        "EXPIRE",
        "PEXPIRE",
        "EXPIREAT",
        "PERSIST",
        "RENAME",
        "HSET",
        "HSETNX",
        "HMSET",
        "HDEL",
        "HINCRBY",
        "HINCRBYFLOAT",
        "SADD",
        "SREM",
        "SMOVE",
        "SPOP",
        "ZADD",
        "ZREM",
        "ZINCRBY",
        "ZREMRANGEBYSCORE",
        "ZREMRANGEBYRANK",
        "ZPOPMIN",
        "INCR",
        "INCRBY",
        "DECR",
        "DECRBY",
        "LPUSH",
        "RPUSH",
        "LPOP",
        "RPOP",
        "LREM",
        "LTRIM",
        "LSET",
        "APPEND",
    }
)
_SCRIPT_CALLS = frozenset({"EVALSHA", "EVAL"})

_REFUSAL = f"return redis.error_reply('{FENCED} the lease of ' .. {{lease}} .. ' has a newer holder')"

# appended KEYS[#KEYS] = the lease, ARGV[#ARGV] = the token, taken off before the script's own code runs
_PRELUDE = f"""local __fence_lease = table.remove(KEYS)
local __fence_token = table.remove(ARGV)
if redis.call('HGET', __fence_lease, 'token') ~= __fence_token then
  {_REFUSAL.format(lease="__fence_lease")}
end
"""

# KEYS[1] the lease; ARGV[1] the token, ARGV[2..] one command
_CALL = f"""if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  {_REFUSAL.format(lease="KEYS[1]")}
end
return redis.call(unpack(ARGV, 2))
"""


def _name(args: tuple[Any, ...]) -> str:
    return args[0].upper() if isinstance(args[0], str) else ""


def _writes(args: tuple[Any, ...]) -> bool:
    name = _name(args)
    return name in _WRITES or name in _SCRIPT_CALLS


class _FencedScript(Script):
    """A registered script run with the lease key and token appended (see ``_PRELUDE``)."""

    def __init__(self, client: FencedRedis, text: str) -> None:
        super().__init__(client, _PRELUDE + text)
        self._fence = client

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        fence = self._fence
        return super().__call__([*(keys or ()), fence.lease_key], [*(args or ()), fence.token], client)


class _FencedPipeline(redis_lib.client.Pipeline):
    """A pipeline whose writes run in a ``MULTI`` that ``WATCH``es the lease (see the module's doc)."""

    def __init__(self, fence: FencedRedis, transaction: bool) -> None:
        super().__init__(fence.connection_pool, fence.response_callbacks, transaction, None)
        self._fence = fence

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = list(self.command_stack)
        if self.watching or not any(_writes(args) for args, _options in stack):
            return super().execute(raise_on_error)
        scripts = set(self.scripts)
        self.reset()
        fence = self._fence
        plain = redis_lib.client.Pipeline(fence.connection_pool, fence.response_callbacks, True, None)
        try:
            plain.watch(fence.lease_key)
            if plain.hget(fence.lease_key, "token") != fence.token:
                raise redis_lib.ResponseError(f"{FENCED} the lease {fence.lease_key} has a newer holder")
            plain.multi()
            plain.scripts.update(scripts)
            for args, options in stack:
                plain.pipeline_execute_command(*args, **options)
            return plain.execute(raise_on_error)
        except redis_lib.WatchError as exc:
            raise redis_lib.ResponseError(
                f"{FENCED} the lease {fence.lease_key} changed during a write"
            ) from exc
        finally:
            plain.reset()


class FencedRedis(redis_lib.Redis):
    """A client on ``connection_pool`` whose writes hold only while ``lease_key``'s token is ``token``.

    Args:
        connection_pool: the process's pool (shared with its unfenced client).
        lease_key: ``keys.lease(pool)``.
        token: the fencing token this process got with the lease.
    """

    def __init__(self, connection_pool: redis_lib.ConnectionPool, lease_key: str, token: int) -> None:
        super().__init__(connection_pool=connection_pool)
        self.lease_key = lease_key
        self.token = str(token)
        self._call = Script(self, _CALL)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = _name(args)
        if name not in _WRITES:
            return super().execute_command(*args, **options)
        reply = self._call(keys=[self.lease_key], args=[self.token, *args])
        options.pop("keys", None)
        if name in self.response_callbacks:
            return self.response_callbacks[name](reply, **options)
        return reply

    def register_script(self, script: Any) -> Any:
        return _FencedScript(self, script)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        return _FencedPipeline(self, transaction)
