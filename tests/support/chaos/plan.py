"""What a chaos run serves: its pools, the chaotic dummy provider's options, and the service config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml

__all__ = ["ALIAS", "CHAOS_OPTIONS", "PROVIDER", "SEED", "ChaosPlan", "Layout"]

ALIAS = "linux"  # the first two pools answer to it too
PROVIDER = "chaos"
SEED = 20261121

CHAOS_OPTIONS: dict[str, Any] = {
    "createvm_fail_percent": 20,
    "destroyvm_fail_percent": 20,
    "vmready_fail_percent": 20,
    "createdisk_fail_percent": 20,
    "createsnapshot_fail_percent": 20,
    "revertsnapshot_fail_percent": 20,
    "migratevm_fail_percent": 20,
    "migratevm_couldmove_percent": 50,
    "getvm_poweroff_percent": 5,
    "getvm_rename_percent": 5,
    "createvm_max_time": 0.5,
    "destroyvm_max_time": 0.3,
    "destroyvm_max_shutdown_time": 0.2,
    "createdisk_max_time": 0.3,
    "createsnapshot_max_time": 0.3,
    "revertsnapshot_max_time": 0.3,
    "migratevm_max_time": 0.2,
    "connection_pool_size": 4,
}

_BASE_VMS = 12  # the default layout's VMs, which the timing settings below were chosen for
_BASE_TASK_LIMIT = 10  # the service's default number of clone slots
_CHECK_LOOP_DELAY_MAX = 1.0


@attrs.frozen(kw_only=True)
class Layout:
    """The pools of a run.

    Attributes:
        sizes: pool → size, in order.
        weights: pool → how often a client picks it. The last pool is picked seldom: its VMs stay ready
            long enough (> 60 s) for the hostname-mismatch check, and so for the provider's power-off
            and rename chaos.
        alias_members: the pools that answer to ``ALIAS``.
    """

    sizes: Mapping[str, int]
    weights: Mapping[str, float]
    alias_members: tuple[str, ...]

    @classmethod
    def default(cls) -> Layout:
        """Three pools of 5, 4 and 3 VMs; alpha and beta answer to the alias, gamma is seldom used."""
        return cls(
            sizes={"alpha": 5, "beta": 4, "gamma": 3},
            weights={"alpha": 5, "beta": 4, "gamma": 0.05},
            alias_members=("alpha", "beta"),
        )

    @classmethod
    def scaled(cls, pools: int, size: int) -> Layout:
        """``pools`` pools of ``size`` VMs (``pool001``, …), equally used but the last (seldom)."""
        if pools < 1 or size < 1:
            raise ValueError(f"a run needs at least one pool of one VM, not {pools} x {size}")
        names = [f"pool{i:03d}" for i in range(1, pools + 1)]
        weights = {name: 1.0 for name in names}
        if pools >= 3:
            weights[names[-1]] = 0.05
        return cls(sizes=dict.fromkeys(names, size), weights=weights, alias_members=tuple(names[:2]))

    @property
    def total(self) -> int:
        """Every pool's size added up."""
        return sum(self.sizes.values())


@attrs.frozen(kw_only=True)
class ChaosPlan:
    """One run's service: the layout, the provider's seed and the directory holding its inventory.

    Settings scale with the number of VMs so that a large run faces the chaos of the default one: the
    ready-VM check rate (and so the rate of check failures, power-offs and renames) stays that of the
    default 12 VMs, and clone slots and provider connections grow so that the pools fill and refill.

    Attributes:
        layout: the pools.
        workdir: where the dummy provider keeps its inventory file.
        seed: the seed of the provider's chaos (the clients take theirs from the run).
        api_workers: the API's worker processes.
    """

    layout: Layout = attrs.field(factory=Layout.default)
    workdir: Path
    seed: int = SEED
    api_workers: int = 2

    @property
    def pools(self) -> Mapping[str, int]:
        return self.layout.sizes

    @property
    def inventory_path(self) -> Path:
        return self.workdir / f"{PROVIDER}-inventory.yaml"

    @property
    def scale(self) -> float:
        """How many times the default run's VMs this run serves (at least 1)."""
        return max(1.0, self.layout.total / _BASE_VMS)

    @property
    def check_loop_delay_max(self) -> float:
        """The pools' slowest pass; the service also caps a failed destroy's retry back-off there."""
        return _CHECK_LOOP_DELAY_MAX

    @property
    def fill_timeout(self) -> float:
        """Seconds the pools get to fill before the load starts."""
        return max(30.0, 0.15 * self.layout.total)

    @property
    def settle_timeout(self) -> float:
        """Seconds the pools get to be back at size, and to destroy every returned VM, after the load."""
        return max(30.0, 0.05 * self.layout.total)

    @property
    def quiet_timeout(self) -> float:
        """Seconds to find the pools settled and unchanged around a read of the provider's inventory."""
        return max(10.0, 0.02 * self.layout.total)

    def provider_options(self) -> dict[str, Any]:
        """The ``:providers:`` section of the chaotic dummy provider (its inventory file in ``workdir``)."""
        task_limit = self._task_limit()
        options: dict[str, Any] = {
            "provider_class": "dummy",
            "filename": str(self.inventory_path),
            "seed": self.seed,
        }
        options.update(CHAOS_OPTIONS)
        base = CHAOS_OPTIONS["connection_pool_size"]
        options["connection_pool_size"] = max(base, round(base * task_limit / _BASE_TASK_LIMIT))
        return options

    def config_yaml(self, redis_url: str) -> str:
        """The service config: one chaotic dummy provider serving every pool of the layout."""
        config: dict[str, Any] = {
            ":config": {
                "api_workers": self.api_workers,
                "check_loop_delay_min": 0.2,
                "check_loop_delay_max": self.check_loop_delay_max,
                # ready VMs are checked every 15 s in the default run, so vmready failures bite
                "vm_checktime": 0.25 * self.scale,
                "task_limit": self._task_limit(),
            },
            ":redis": {"url": redis_url},
            ":providers": {f":{PROVIDER}": self.provider_options()},
            ":pools": [
                {
                    "name": name,
                    "template": f"templates/{name}",
                    "size": size,
                    "provider": PROVIDER,
                    **({"alias": [ALIAS]} if name in self.layout.alias_members else {}),
                }
                for name, size in self.pools.items()
            ],
        }
        return yaml.safe_dump(config, sort_keys=False)

    def _task_limit(self) -> int:
        return max(_BASE_TASK_LIMIT, self.layout.total // 20)
