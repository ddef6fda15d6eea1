"""The vSphere provider: pools of VMs cloned from vSphere templates, on pyVmomi.

Modules: ``config`` (settings: the ``:providers:`` section and a pool's vSphere keys), ``provider``
(:class:`VSphereProvider`, the contract), ``clone`` (create_vm), ``extras`` (disks, snapshots, delta
disks, migration, purge), ``placement`` (host selection), ``inventory`` (cached path lookups),
``sessions`` (the bounded, health-checked session pool), ``values`` (neutral values and errors), and
the SDK boundary ``client`` with its spec builders ``specs``: the only modules that import pyVmomi.
"""

from __future__ import annotations

from vmpooler.providers.vsphere.config import PoolSettings, VSphereSettings
from vmpooler.providers.vsphere.provider import POOL_OPTION_KEYS, VSphereProvider

__all__ = ["POOL_OPTION_KEYS", "PoolSettings", "VSphereProvider", "VSphereSettings"]
