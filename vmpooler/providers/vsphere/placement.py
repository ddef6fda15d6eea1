"""Host selection (``manage_host_selection``) and migration targets (``migration_limit``), as the original:

* A host is eligible when it is out of maintenance, ``green``, without configuration issues, has a known
  non-zero CPU and memory load and both are at most ``utilization_limit`` percent.
* The targets of a cluster are the eligible hosts whose CPU load is at or below the cluster's average,
  least loaded first; the same selection is made per CPU "architecture" (the fifth word of the CPU
  model), for migrations, which must stay on one architecture.
* Clones go round-robin over the targets (the one used longest ago next). A ranking is reused for
  ``host_selection_max_age`` seconds, then read again from vCenter.
* A checked-out VM is migrated when its host is not among the targets (of its architecture): it moves to
  the next target of its architecture.

Pure except for the clock; the vCenter reads are the caller's ``load`` function.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from collections.abc import Callable, Hashable, Iterable

import attrs

from vmpooler.errors import ProviderError
from vmpooler.providers.vsphere.values import HostStats, Ref

__all__ = ["HostSelector", "Ranking", "eligible", "least_used", "rank"]


def eligible(host: HostStats, limit: float) -> bool:
    """Whether clones may go to ``host`` (see the module docstring)."""
    if host.maintenance or host.status != "green" or host.config_issues:
        return False
    cpu, memory = host.cpu_percent, host.memory_percent
    return bool(cpu and memory) and cpu <= limit and memory <= limit  # type: ignore[operator]


def least_used(hosts: Iterable[HostStats]) -> list[HostStats]:
    """The hosts at or below their average CPU load, least loaded first (ties by name)."""
    hosts = list(hosts)
    if not hosts:
        return []
    average = sum(h.cpu_percent or 0.0 for h in hosts) / len(hosts)
    return sorted(
        (h for h in hosts if (h.cpu_percent or 0.0) <= average), key=lambda h: (h.cpu_percent, h.name)
    )


@attrs.frozen
class Ranking:
    """The targets of one cluster: host names in order, overall and per architecture."""

    hosts: tuple[str, ...]
    by_architecture: dict[str, tuple[str, ...]]
    refs: dict[str, Ref]
    architectures: dict[str, str]


def rank(hosts: Iterable[HostStats], limit: float, where: str) -> Ranking:
    """Rank a cluster's hosts.

    Raises:
        ProviderError: no host is eligible (transient: loads change).
    """
    usable = [h for h in hosts if eligible(h, limit)]
    if not usable:
        raise ProviderError(
            f"{where}: no host is green, out of maintenance, without configuration issues and under "
            f"{limit:g}% CPU and memory"
        )
    groups: dict[str, list[HostStats]] = collections.defaultdict(list)
    for host in usable:
        groups[host.architecture].append(host)
    return Ranking(
        hosts=tuple(h.name for h in least_used(usable)),
        by_architecture={arch: tuple(h.name for h in least_used(group)) for arch, group in groups.items()},
        refs={h.name: h.ref for h in usable},
        architectures={h.name: h.architecture for h in usable},
    )


class HostSelector:
    """Per-cluster rankings with round-robin state. Thread-safe; ``load`` runs without the lock held.

    Round-robin survives a refresh of the ranking: the next host is the target used longest ago (never
    used first, in ranking order), so a re-read ranking does not restart at its first host.
    """

    def __init__(self, max_age: float, limit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_age = max_age
        self._limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._rankings: dict[Hashable, tuple[Ranking, float]] = {}
        self._last_used: dict[Hashable, dict[str, int]] = collections.defaultdict(dict)
        self._uses = itertools.count(1)

    def ranking(self, key: Hashable, load: Callable[[], list[HostStats]], where: str) -> Ranking:
        """The ranking of cluster ``key``, read again through ``load`` when older than the max age."""
        with self._lock:
            cached = self._rankings.get(key)
            if cached is not None and self._clock() - cached[1] <= self._max_age:
                return cached[0]
        ranking = rank(load(), self._limit, where)
        with self._lock:
            self._rankings[key] = (ranking, self._clock())
        return ranking

    def next_host(self, key: Hashable, architecture: str | None = None) -> tuple[str, Ref]:
        """The next target of cluster ``key`` (of ``architecture``), round-robin; call ``ranking`` first.

        Raises:
            ProviderError: no ranking yet, or no target of that architecture.
        """
        with self._lock:
            cached = self._rankings.get(key)
            if cached is None:
                raise ProviderError(f"no host ranking for {key!r}")
            ranking = cached[0]
            targets = ranking.hosts if architecture is None else ranking.by_architecture.get(architecture, ())
            if not targets:
                raise ProviderError(f"no target host of CPU architecture {architecture!r} in {key!r}")
            used = self._last_used[key]
            host = min(targets, key=lambda h: (used.get(h, 0), targets.index(h)))
            used[host] = next(self._uses)
            return host, ranking.refs[host]

    def is_target(self, key: Hashable, host: str, architecture: str | None) -> bool:
        """Whether ``host`` is among the targets of cluster ``key`` (overall or of its architecture)."""
        with self._lock:
            cached = self._rankings.get(key)
            if cached is None:
                return False
            ranking = cached[0]
            return host in ranking.hosts or host in ranking.by_architecture.get(architecture or "", ())
