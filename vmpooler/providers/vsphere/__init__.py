"""The vSphere provider: pools of VMs cloned from vSphere templates, on pyVmomi.

Modules: ``config`` (settings: the ``:providers:`` section and a pool's vSphere keys), ``provider``
(:class:`VSphereProvider`, the contract), ``clone`` (create_vm), ``extras`` (disks, snapshots, delta
disks, migration, purge), ``placement`` (host selection), ``inventory`` (cached path lookups),
``sessions`` (the bounded, health-checked session pool), ``values`` (neutral values and errors), and
the SDK boundary ``client`` with its spec builders ``specs``: the only modules that import pyVmomi.

``VSphereProvider`` is imported on first use, so that ``config`` (the dummy reads its pool key names)
can be imported without pyVmomi.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmpooler.providers.vsphere.config import POOL_KEYS, PoolSettings, VSphereSettings

if TYPE_CHECKING:
    from vmpooler.providers.vsphere.provider import VSphereProvider

__all__ = ["POOL_OPTION_KEYS", "PoolSettings", "VSphereProvider", "VSphereSettings"]

POOL_OPTION_KEYS = POOL_KEYS


def __getattr__(name: str) -> Any:
    if name == "VSphereProvider":
        from vmpooler.providers.vsphere.provider import VSphereProvider

        return VSphereProvider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
