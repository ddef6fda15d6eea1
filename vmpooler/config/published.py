"""Pools read back from Redis, for an API node whose configuration has no ``:pools:`` (as the original).

A manager publishes its pools at start (``vmpooler.worker.publish_pools``): the set ``vmpooler__pools``
and, per pool, the hash ``vmpooler__pool__<name>`` holding every scalar key of the pool's entry as a
string, ``alias`` comma-joined, and the pool's resolved ``domain``. :func:`parse_published_pools`
turns those hashes into the same :class:`~vmpooler.config.pools.PoolConfig` objects a file gives.

It is lenient where a file load is strict: the pool's provider need not be configured on this node
(the API never loads provider plugins), a bad value skips that pool alone with a warning naming the
hash and key, and nothing raises. An empty value counts as not given (the original writes a missing
domain as ``""``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from vmpooler import keys
from vmpooler.config.pools import PoolConfig
from vmpooler.config.reader import Context
from vmpooler.config.schema import GlobalConfig
from vmpooler.config.values import Kind, coerce

__all__ = ["parse_published_pools"]

# Keys given typed values in ``PoolConfig.raw`` (``GET /config``), so the pool reads as it would from a
# file; the other keys stay strings, as the manager wrote them.
_TYPED_KEYS = {
    "size": Kind.INT,
    "timeout": Kind.NUMBER,
    "timeout_notification": Kind.NUMBER,
    "ready_ttl": Kind.NUMBER,
    "check_loop_delay_min": Kind.NUMBER,
    "check_loop_delay_max": Kind.NUMBER,
    "check_loop_delay_decay": Kind.NUMBER,
    "check_hostname_for_mismatch": Kind.BOOL,
}


def parse_published_pools(
    published: Mapping[str, Mapping[str, str]], globals_: GlobalConfig
) -> tuple[tuple[PoolConfig, ...], tuple[str, ...]]:
    """The pools of the published hashes, in name order, and the warnings of their parse.

    Args:
        published: pool name → its published hash (``Store.pools.published()``).
        globals_: this node's ``:config:``, whose defaults the pools inherit (``ready_ttl``, ...).

    Returns:
        The pools that parsed, and one warning per odd value or skipped pool, each naming the pool's
        hash and the key (``"vmpooler__pool__debian.size: must be an integer >= 0, got 'x'; pool
        'debian' skipped"``).
    """
    pools: list[PoolConfig] = []
    warnings: list[str] = []
    for name in sorted(published):
        ctx = Context()
        pool = _parse_one(name, published[name], globals_, ctx)
        warnings.extend(ctx.warnings)
        warnings.extend(f"{problem}; pool {name!r} skipped" for problem in ctx.problems)
        if pool is not None and not ctx.problems:
            pools.append(pool)
    return tuple(pools), tuple(warnings)


def _parse_one(
    name: str, fields: Mapping[str, str], globals_: GlobalConfig, ctx: Context
) -> PoolConfig | None:
    # the set member is the pool's name, whatever the hash says
    data: dict[str, Any] = {"name": name}
    data.update((key, value) for key, value in fields.items() if value != "" and key != "name")
    pool = PoolConfig._parse(data, keys.pool_hash(name), ctx, globals_, published=True)
    if pool is None:
        return None
    # the parse accepted these values, so they convert
    raw = {
        key: coerce(value, _TYPED_KEYS[key]) if key in _TYPED_KEYS else value for key, value in data.items()
    }
    if "alias" in raw:
        raw["alias"] = list(pool.alias)  # a list, as the original's loader splits it
    return attrs.evolve(pool, raw=raw)
