"""Pool-wide state: the published pool configs, the ``/config`` overrides, prepared templates, pool reset
requests, empty flags, and the subscription to the pools' event channels.

Each write of the pool configuration endpoints is one MULTI/EXEC that also publishes a
``bus.ConfigChanged`` on the channel of every pool it changes, so the pool's manager acts at once; the
keys stay the durable truth for a pass that missed the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vmpooler import bus, keys
from vmpooler.store.connection import translated

__all__ = ["Pools"]

# The override kinds that can be undone, and the set telling the manager to go back to the file's value.
_UNDO = {"poolsize": keys.UNDO_SIZE_OVERRIDE, "template": keys.UNDO_TEMPLATE_OVERRIDE}


class Pools:
    """What is kept per pool rather than per VM."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client

    @translated
    def publish(self, pools: Mapping[str, Mapping[str, str]], *, remove_others: bool) -> None:
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

    @translated
    def overrides(self, kind: str) -> dict[str, str]:
        """Pool → override value from ``vmpooler__config__<kind>``."""
        return dict(self._redis.hgetall(keys.config_override(kind)))

    @translated
    def set_overrides(self, kind: str, values: Mapping[str, str]) -> None:
        """Write the ``kind`` override of each pool in ``values`` and announce each, all in one transaction.

        Args:
            kind: ``poolsize``, ``template`` or ``clone_target``.
            values: pool → the new override value (already validated).
        """
        if not values:
            return
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.config_override(kind), mapping=dict(values))
            for pool in values:
                pipe.publish(keys.events_channel(pool), bus.encode(bus.ConfigChanged(pool)))
            pipe.execute()

    @translated
    def undo_override(self, kind: str, pool: str) -> None:
        """Remove the pool's ``kind`` override, ask its manager to go back to the configured value, announce.

        Args:
            kind: ``poolsize`` or ``template``.
            pool: the pool.
        """
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.config_override(kind), pool)
            pipe.sadd(_UNDO[kind], pool)
            pipe.publish(keys.events_channel(pool), bus.encode(bus.ConfigChanged(pool)))
            pipe.execute()

    @translated
    def request_reset(self, pools: Iterable[str]) -> None:
        """Ask the managers of ``pools`` to drain their ready and pending VMs and refill (``/poolreset``)."""
        names = list(dict.fromkeys(pools))
        if not names:
            return
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(keys.POOLRESET, *names)
            for pool in names:
                pipe.publish(keys.events_channel(pool), bus.encode(bus.ConfigChanged(pool)))
            pipe.execute()

    @translated
    def prepared_templates(self) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.TEMPLATE_PREPARED))

    @translated
    def mark_prepared(self, pool: str, template: str, *, deltas: bool) -> None:
        """The pool clones from ``template`` now (``template_ready`` in ``GET /config``); ``deltas``:
        its delta disks were made (``vmpooler__template__deltas``, as the original)."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.TEMPLATE_PREPARED, pool, template)
            if deltas:
                pipe.sadd(keys.TEMPLATE_DELTAS, template)
            pipe.execute()

    @translated
    def set_empty_flag(self, pool: str, empty: bool) -> bool:
        """Set or clear the pool's empty flag; True if it changed (for logging once)."""
        if empty:
            return bool(self._redis.set(keys.empty_flag(pool), "true", nx=True))
        return bool(self._redis.delete(keys.empty_flag(pool)))

    def events_pubsub(self, pools: Iterable[str]) -> Any:
        """A pub/sub object subscribed to the channels of ``pools`` (``vmpooler.bus``)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(*(keys.events_channel(p) for p in pools))
        return pubsub

    # KEYS: the pool name set. ARGV: the pool hash key prefix. -> name, its hash as a flat list, name, ...
    _PUBLISHED = """
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = name
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. name)
end
return out
"""

    @translated
    def published(self) -> dict[str, dict[str, str]]:
        """The pools a manager published (``publish``): name → its config hash, in one round trip.

        An API node whose config has no ``:pools:`` builds its pools from this
        (``Config.with_published_pools``). A name whose hash is gone maps to ``{}``.
        """
        reply = self._redis.eval(self._PUBLISHED, 1, keys.POOLS, keys.pool_hash(""))
        return {
            name: dict(zip(flat[::2], flat[1::2], strict=True))
            for name, flat in zip(reply[::2], reply[1::2], strict=True)
        }
