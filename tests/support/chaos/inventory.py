"""What the provider says: the dummy provider's inventory, read through its public interface, and where it
disagrees with Redis.

The service's dummy provider keeps its VMs in a file (its ``filename`` option). To see them, this module
builds a ``DummyProvider`` of its own on the same options, starts it (which loads that file) and asks
``list_vms(pool)``, as the service's pool actors do; it never parses the file itself.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tests.support.chaos.sets import SETS, Redis, pool_sets, settled
from vmpooler.providers.base import PoolSpec
from vmpooler.providers.dummy import DummyProvider, DummySettings

__all__ = ["InventorySource", "consistency_problems", "quiet_inventory", "read_inventory"]

InventorySource = Mapping[str, Any] | str | os.PathLike[str]
"""A dummy provider's ``:providers:`` options, or just its inventory file's path."""


def _provider(source: InventorySource, pools: Iterable[str]) -> DummyProvider:
    """A started provider on ``source``'s options, serving ``pools``: it holds the file's VMs.

    It is never stopped: the file belongs to the service, and it only reads.
    """
    if isinstance(source, Mapping):
        options = dict(source)
    else:
        options = {"provider_class": "dummy", "filename": os.fspath(source)}
    settings = DummySettings.from_options(options, instance="inventory-reader", warnings=[])
    specs = {pool: PoolSpec(name=pool, template=f"templates/{pool}") for pool in pools}
    provider = DummyProvider("inventory-reader", settings, specs)
    provider.start()
    return provider


def read_inventory(sources: Iterable[InventorySource], pools: Iterable[str]) -> dict[str, list[str]]:
    """Pool → VM names (duplicates kept) in the providers' inventories, now.

    Args:
        sources: one entry per provider instance of the service.
        pools: the configured pools: each is asked with ``list_vms``; VMs of any other pool are
            listed under it too (from the provider's ``inventory()``), so that they show as a problem.

    Returns:
        Only pools with VMs.
    """
    names = list(pools)
    found: dict[str, list[str]] = collections.defaultdict(list)
    for source in sources:
        provider = _provider(source, names)
        for pool in names:
            found[pool] += [vm.name for vm in provider.list_vms(pool)]
        for pool, vms in provider.inventory().items():
            if pool not in names:
                found[pool] += vms
    return {pool: vms for pool, vms in found.items() if vms}


def quiet_inventory(
    client: Redis, pools: Mapping[str, int], sources: Iterable[InventorySource], timeout: float = 10.0
) -> dict[str, list[str]] | None:
    """The inventory, read while every pool is settled and no set changes (None if never).

    Redis is read before and after the provider: the provider writes its file before the manager records
    a change in Redis, so equal settled reads on both sides mean the inventory shows that same moment.
    """
    sources = list(sources)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [pool_sets(client, pool) for pool in pools]
        inventory = read_inventory(sources, pools)
        if settled(client, pools) and before == [pool_sets(client, pool) for pool in pools]:
            return inventory
        time.sleep(0.05)
    return None


def consistency_problems(
    client: Redis, pools: Iterable[str], inventory: Mapping[str, list[str]]
) -> list[str]:
    """Where Redis and the provider's inventory disagree. Call it when the pools are quiet.

    Checked: no VM in two sets (in one pool or across pools) and no name twice in the inventory (in one
    pool or across pools); every
    inventory VM is in exactly one of its pool's pending/ready/running/completed sets; every pending,
    ready or running VM is in the inventory; ``migrating`` only holds running VMs; no inventory VM
    belongs to a pool that is not configured.
    """
    problems: list[str] = []
    seen: dict[str, str] = {}
    names = list(pools)
    for pool in names:
        sets = pool_sets(client, pool)
        for state in SETS:
            for vm in sets[state]:
                where = f"{pool}/{state}"
                if vm in seen:
                    problems.append(f"{vm} is in two sets: {seen[vm]} and {where}")
                seen[vm] = where
        stray = sets["migrating"] - sets["running"]
        if stray:
            problems.append(f"{pool}: migrating but not running: {sorted(stray)}")
        listed = inventory.get(pool, [])
        twice = sorted(vm for vm, n in collections.Counter(listed).items() if n > 1)
        if twice:
            problems.append(f"{pool}: listed twice in the inventory: {twice}")
        tracked = sets["pending"] | sets["ready"] | sets["running"] | sets["completed"]
        leaked = sorted(set(listed) - tracked)
        if leaked:
            problems.append(f"{pool}: in the provider but in no set (leaked): {leaked}")
        lost = sorted((sets["pending"] | sets["ready"] | sets["running"]) - set(listed))
        if lost:
            problems.append(f"{pool}: in Redis but not in the provider (lost): {lost}")
    for pool, listed in inventory.items():
        if pool not in names and listed:
            problems.append(f"VMs of unconfigured pool {pool} in the inventory: {sorted(listed)}")
    pools_of: dict[str, set[str]] = collections.defaultdict(set)
    for pool, listed in inventory.items():
        for vm in listed:
            pools_of[vm].add(pool)
    problems += [f"{vm} is in the inventory of pools {sorted(p)}" for vm, p in pools_of.items() if len(p) > 1]
    return problems
