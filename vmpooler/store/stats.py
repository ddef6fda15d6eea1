"""Counts and statistics: set sizes for ``/status`` and the dashboard, the daily clone/boot/tag hashes,
``lastboot``, the on-demand queues; and the manager's writes of clone and boot times."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from vmpooler import keys
from vmpooler.model import VMState
from vmpooler.store.connection import translated

__all__ = ["PoolCounts", "Stats"]


@attrs.frozen
class PoolCounts:
    """The sizes of one pool's state sets."""

    ready: int = 0
    running: int = 0
    pending: int = 0
    completed: int = 0


_COUNTED = (VMState.READY, VMState.RUNNING, VMState.PENDING, VMState.COMPLETED)  # PoolCounts' order

_DAILY = {"clone": keys.clone_stats, "boot": keys.boot_stats, "tag": keys.tag_stats}


class Stats:
    """Read the counts and statistics; record clone and boot times."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client

    @translated
    def pool_counts(self, pools: Iterable[str]) -> dict[str, PoolCounts]:
        """Set sizes of every pool in one round trip."""
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                for state in _COUNTED:
                    pipe.scard(keys.state_set(state.value, pool))
            sizes = pipe.execute()
        return {pool: PoolCounts(*sizes[4 * i : 4 * i + 4]) for i, pool in enumerate(names)}

    @translated
    def ready_counts(self, pools: Iterable[str]) -> dict[str, int]:
        names = list(pools)
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in names:
                pipe.scard(keys.ready_set(pool))
            return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))

    @translated
    def running_total(self, pools: Iterable[str]) -> int:
        with self._redis.pipeline(transaction=False) as pipe:
            for pool in pools:
                pipe.scard(keys.running_set(pool))
            return sum(int(n) for n in pipe.execute())

    @translated
    def requested_count(self) -> int:
        """On-demand VMs asked for but not cloning yet: those of requests not taken in, and the clone
        tasks queued (``<alias>:<pool>:<count>:<id>``)."""
        with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.PROVISIONING_REQUEST, 0, -1)
            pipe.zrange(keys.ODCREATE_TASK, 0, -1)
            new, tasks = pipe.execute()
        wanted = [task.split(":", 3)[2] for task in tasks if task.count(":") >= 3]
        if new:
            with self._redis.pipeline(transaction=False) as pipe:
                for request_id in new:
                    pipe.hget(keys.odrequest(request_id), "requested")
                for requested in pipe.execute():
                    wanted += [entry.rsplit(":", 1)[-1] for entry in (requested or "").split(",") if entry]
        return sum(int(n) for n in wanted if n.isdigit())

    @translated
    def lastboot(self) -> dict[str, str]:
        return dict(self._redis.hgetall(keys.LASTBOOT))

    @translated
    def daily_hashes(self, kind: str, dates: Sequence[str]) -> list[dict[str, str]]:
        """The ``clone``, ``boot`` or ``tag`` stats hash of each date, in one round trip."""
        key_of = _DAILY[kind]
        with self._redis.pipeline(transaction=False) as pipe:
            for date in dates:
                pipe.hgetall(key_of(date))
            return [dict(h) for h in pipe.execute()]

    @translated
    def record_clone(self, pool: str, vm: str, *, date: str, seconds: float, ip: str | None) -> None:
        """One MULTI: the clone time in ``date``'s clone stats, and ``clone_time`` (and ``ip``) in the VM's
        hash."""
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(keys.clone_stats(date), f"{pool}:{vm}", _seconds(seconds))
            fields = {"clone_time": _seconds(seconds)}
            if ip:
                fields["ip"] = ip
            pipe.hset(keys.vm_hash(vm), mapping=fields)
            pipe.execute()

    def boot_writes(
        self, pool: str, vm: str, *, date: str, now: str, seconds: float
    ) -> list[tuple[str, str, str]]:
        """The hash writes that record a boot, for ``VMs.move``'s ``other`` (pending → ready writes them
        in the same script): the boot time in ``date``'s boot stats, and the pool's ``lastboot``."""
        return [(keys.boot_stats(date), f"{pool}:{vm}", _seconds(seconds)), (keys.LASTBOOT, pool, now)]


def _seconds(seconds: float) -> str:
    return f"{seconds:.2f}"
