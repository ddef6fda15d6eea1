"""Pool-wide state: the published pool configs, the ``/config`` overrides, prepared templates, pool reset
requests, empty flags, and the subscription to the pools' event channels."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["Pools"]


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
    def prepared_templates(self) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.TEMPLATE_PREPARED))

    @translated
    def claim_reset(self, pool: str) -> bool:
        """Take a pending ``POST /poolreset`` request for ``pool``; True if there was one."""
        return bool(self._redis.srem(keys.POOLRESET, pool))

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
