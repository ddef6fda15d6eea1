"""What Redis says about the pools: their state sets (read atomically), and bookkeeping left behind.

Every key comes from ``vmpooler.keys``.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from vmpooler import keys

__all__ = [
    "SETS",
    "Redis",
    "Sampler",
    "at_size",
    "leak_problems",
    "leftover_tasks",
    "pool_sets",
    "pool_state",
    "sets_overlap",
    "settled",
]

# A ``redis.Redis`` with ``decode_responses=True``: its replies are str, which redis-py's types miss.
Redis = Any

# The sets a VM of a pool can be in (``migrating`` is a side set of ``running``).
SETS = ("pending", "ready", "running", "completed", "discovered")


def pool_sets(client: Redis, pool: str) -> dict[str, set[str]]:
    """The members of each state set of ``pool`` (plus ``migrating``)."""
    return {state: set(client.smembers(keys.state_set(state, pool))) for state in (*SETS, "migrating")}


def sets_overlap(client: Redis, pools: Iterable[str]) -> list[str]:
    """VMs that are in two state sets at one instant (all sets read in one MULTI)."""
    names = list(pools)
    with client.pipeline(transaction=True) as pipe:
        for pool in names:
            for state in SETS:
                pipe.smembers(keys.state_set(state, pool))
        members = iter(pipe.execute())
    where: dict[str, list[str]] = collections.defaultdict(list)
    for pool in names:
        for state in SETS:
            for vm in next(members):
                where[vm].append(f"{pool}/{state}")
    return [f"{vm} is in {' and '.join(places)} at once" for vm, places in where.items() if len(places) > 1]


class Sampler(threading.Thread):
    """Reads every set of every pool atomically a few times a second; keeps each overlap seen.

    Args:
        client: a ``decode_responses`` client on the service's DB.
        pools: the pools to read.
        stop: set to end the thread.
        interval: seconds between samples.
    """

    def __init__(
        self, client: Redis, pools: Iterable[str], stop: threading.Event, interval: float = 0.2
    ) -> None:
        super().__init__(name="chaos-sampler", daemon=True)
        self._client, self._pools, self._halt, self._interval = client, list(pools), stop, interval
        self.samples = 0
        self.overlaps: set[str] = set()

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            self.overlaps.update(sets_overlap(self._client, self._pools))
            self.samples += 1


def at_size(client: Redis, pools: Mapping[str, int]) -> bool:
    """Every pool back at its size: ready = size, nothing pending, running or discovered."""
    for pool, size in pools.items():
        sets = pool_sets(client, pool)
        if len(sets["ready"]) != size or any(sets[s] for s in ("pending", "running", "discovered")):
            return False
    return True


def settled(client: Redis, pools: Mapping[str, int]) -> bool:
    """Every pool at its size with nothing in flight: ready = size, no other set has members."""
    return at_size(client, pools) and not any(client.scard(keys.completed_set(pool)) for pool in pools)


def pool_state(client: Redis, pools: Iterable[str]) -> str:
    """The non-empty sets of every pool and their sizes, for messages."""
    parts = []
    for pool in pools:
        sets = pool_sets(client, pool)
        parts.append(pool + " " + " ".join(f"{s}={len(sets[s])}" for s in SETS if sets[s]))
    return "; ".join(parts)


def leak_problems(client: Redis, pools: Iterable[str]) -> list[str]:
    """Bookkeeping left behind once nothing is running or cloning: clone slots, active and migrating."""
    problems = []
    leases = client.zrange(keys.CLONE_LEASES, 0, -1)
    if leases or int(client.get(keys.TASKS_CLONE) or 0):
        problems.append(
            f"clone slots still held: {leases}, {keys.TASKS_CLONE}={client.get(keys.TASKS_CLONE)}"
        )
    for pool in pools:
        active = client.hkeys(keys.active_hash(pool))
        if active:
            problems.append(f"{pool}: checkout times of VMs no longer running: {sorted(active)}")
        migrating = client.smembers(keys.migrating_set(pool))
        if migrating:
            problems.append(f"{pool}: still migrating: {sorted(migrating)}")
    return problems


def leftover_tasks(client: Redis) -> int:
    """Disk, snapshot and revert requests still queued in Redis (not a problem: shown in the summary)."""
    return sum(
        int(client.scard(key)) for key in (keys.TASKS_DISK, keys.TASKS_SNAPSHOT, keys.TASKS_SNAPSHOT_REVERT)
    )
