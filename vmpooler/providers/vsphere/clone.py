"""Cloning a pool's template into a new, powered-on VM (as the original's vSphere provider).

One ``create_vm`` is: find the template (``<datacenter>/vm/<template>``) and the pool folder (creating
every missing level when ``create_folders``), check the name is free, plan the placement (the cluster's
resource pool, or the next least-used host with ``manage_host_selection``), the datastore, linked or
full disks, the annotation and extraConfig and an optional network, clone, wait for the task, and make
sure the VM runs where it was meant to.

Simulator allowances (govmomi vcsim 0.24), harmless on a real vCenter, where they never trigger:

* ``_SIMULATOR_IGNORES_POWER_ON``: vcsim ignores the clone spec's ``powerOn``; a clone found powered
  off is powered on.
* ``_SIMULATOR_IGNORES_CLONE_HOST``: vcsim places a clone on its template's host whatever the spec's
  host; a clone found elsewhere than the chosen host is relocated there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING

from vmpooler.errors import CloneFailed, ProviderError, ProviderTimeout, ProviderUnavailable
from vmpooler.providers.vsphere.inventory import join
from vmpooler.providers.vsphere.specs import ClonePlan
from vmpooler.providers.vsphere.values import VM_PATHS, Device, ObjectGone, Ref, VMProps, permanent

if TYPE_CHECKING:
    from vmpooler.providers.base import PoolSpec
    from vmpooler.providers.vsphere.client import Session
    from vmpooler.providers.vsphere.config import PoolSettings
    from vmpooler.providers.vsphere.inventory import Backend

__all__ = ["clone_vm", "compute_for", "valid_template_path"]

log = logging.getLogger(__name__)

_SIMULATOR_IGNORES_POWER_ON = True
_SIMULATOR_IGNORES_CLONE_HOST = True


def valid_template_path(template: str) -> bool:
    """A template is a relative path with a folder: ``Templates/centos-8`` (the original's rule)."""
    return "/" in template and not template.startswith("/") and not template.endswith("/")


def clone_vm(b: Backend, s: Session, spec: PoolSpec, ps: PoolSettings, name: str) -> VMProps:
    """Clone ``spec.template`` into VM ``name`` of pool ``spec.name`` and power it on.

    Raises:
        CloneFailed: nothing was left behind; ``transient=False`` when a retry cannot help (bad
            template path, missing template, folder or datastore, name taken).
        ProviderTimeout: the clone task outlived ``task_timeout``; the VM may appear later.
        ProviderUnavailable: vCenter cannot be reached.
    """
    pool = spec.name
    if not valid_template_path(spec.template):
        raise CloneFailed(
            f"pool {pool}: template {spec.template!r} must be a path like Templates/name", transient=False
        )
    dc = b.resolver.datacenter(s, ps.datacenter)
    template = b.resolver.path(s, join(dc, "vm", spec.template))
    if template is None:
        raise CloneFailed(
            f"pool {pool} specifies a template VM of {spec.template} which does not exist", transient=False
        )
    if ps.folder is None:
        raise CloneFailed(f"pool {pool} has no folder: set the pool's 'folder' key", transient=False)
    folder = b.resolver.folder(s, dc, ps.folder, create=b.settings.create_folders)
    if folder is None:
        raise CloneFailed(
            f"cannot find the configured folder for pool {pool}: {join(dc, 'vm', ps.folder)} "
            "(create_folders is off)",
            transient=False,
        )
    if b.resolver.find_child(s, folder, name) is not None:
        raise CloneFailed(f"a VM called {name} already exists in {ps.folder}", transient=False)
    plan = _plan(b, s, spec, ps, dc, template, name)
    try:
        task = s.clone(template, folder, name, plan)
        vm = b.wait(s, task, f"clone {name}")
    except (ProviderTimeout, ProviderUnavailable):
        raise
    except ProviderError as exc:
        gone = isinstance(exc, ObjectGone)  # a cached template or folder was deleted: look them up again
        if gone:
            b.resolver.forget(join(dc, "vm", spec.template))
            b.resolver.forget(join(dc, "vm", ps.folder))
        raise CloneFailed(f"clone of {name} failed: {exc}", transient=gone or exc.transient) from exc
    if not isinstance(vm, Ref):
        raise CloneFailed(f"clone of {name}: vCenter returned no VM")
    return _settle(b, s, vm, plan, name)


def compute_for(b: Backend, s: Session, spec: PoolSpec, dc: str) -> Ref:
    """The cluster of a pool: its ``clone_target`` (pool, then global), else the datacenter's only one."""
    if spec.clone_target:
        return b.resolver.compute(s, dc, spec.clone_target)
    return b.resolver.only_compute(s, dc)


def _plan(
    b: Backend, s: Session, spec: PoolSpec, ps: PoolSettings, dc: str, template: Ref, name: str
) -> ClonePlan:
    try:
        compute = compute_for(b, s, spec, dc)
        resource_pool = b.resolver.value(s, compute, "resourcePool")
        host = None
        if b.settings.manage_host_selection:
            where = f"vCenter {s.server}: cluster {spec.clone_target or compute.value}"
            b.hosts.ranking((dc, compute), lambda: b.resolver.hosts(s, compute), where)
            host_name, host = b.hosts.next_host((dc, compute))
            log.debug("clone %s goes to host %s", name, host_name)
        datastore = None
        if ps.datastore:
            datastore = b.resolver.path(s, join(dc, "datastore", ps.datastore))
            if datastore is None:
                raise permanent(ProviderError(f"datastore {ps.datastore!r} does not exist in {dc}"))
        nic = network = None
        dvs_uuid = portgroup_key = None
        if ps.network:
            nic, network, dvs_uuid, portgroup_key = _network(b, s, dc, template, ps.network)
    except (ProviderTimeout, ProviderUnavailable):
        raise
    except ProviderError as exc:
        raise CloneFailed(f"pool {spec.name}: {exc}", transient=exc.transient) from exc
    extra = {"guestinfo.hostname": name}
    if ps.snapshot_mainMem_ioBlockPages is not None:
        extra["mainMem.ioBlockPages"] = ps.snapshot_mainMem_ioBlockPages
    if ps.snapshot_mainMem_iowait is not None:
        extra["mainMem.iowait"] = ps.snapshot_mainMem_iowait
    linked = b.settings.create_linked_clones if ps.create_linked_clone is None else ps.create_linked_clone
    return ClonePlan(
        pool=resource_pool,
        host=host,
        datastore=datastore,
        linked=linked,
        annotation=annotation(name, b.settings.username, spec.template),
        extra_config=extra,
        nic=nic,
        network=network,
        network_name=ps.network,
        dvs_uuid=dvs_uuid,
        portgroup_key=portgroup_key,
    )


def annotation(name: str, username: str, template: str) -> str:
    """The notes a clone gets: the original's JSON (name, created_by, base_template, creation_timestamp)."""
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    fields = {"name": name, "created_by": username, "base_template": template, "creation_timestamp": created}
    return json.dumps(fields, indent=2)


def _network(
    b: Backend, s: Session, dc: str, template: Ref, network_name: str
) -> tuple[Device, Ref, str | None, str | None]:
    network = b.resolver.path(s, join(dc, "network", network_name))
    if network is None:
        raise permanent(ProviderError(f"cannot find network {network_name} in datacenter {dc}"))
    nics = [d for d in s.devices(template) if d.kind == "nic"]
    if not nics:
        raise permanent(ProviderError(f"the template has no network card to connect to {network_name}"))
    if network.type != "DistributedVirtualPortgroup":
        return nics[0], network, None, None
    key = b.resolver.value(s, network, "key")
    switch = b.resolver.value(s, network, "config.distributedVirtualSwitch")
    return nics[0], network, b.resolver.value(s, switch, "uuid"), key


def _settle(b: Backend, s: Session, vm: Ref, plan: ClonePlan, name: str) -> VMProps:
    """Power the clone on and move it to the chosen host where vCenter did not (see the allowances).
    A failure here destroys the clone, so no VM is left behind."""
    try:
        props = _props(s, vm)
        if _SIMULATOR_IGNORES_POWER_ON and props.powerstate != "poweredOn":
            b.run(s, f"power on {name}", vm, "PowerOnVM_Task")
        if _SIMULATOR_IGNORES_CLONE_HOST and plan.host is not None and props.host != plan.host:
            b.wait(s, s.relocate(vm, plan.host), f"place {name}")
        return _props(s, vm)
    except (ProviderTimeout, ProviderUnavailable):
        raise
    except ProviderError as exc:
        with contextlib.suppress(ProviderError):
            b.run(s, f"destroy {name}", vm, "Destroy_Task")
        raise CloneFailed(f"{name} was cloned but could not be started: {exc}") from exc


def _props(s: Session, vm: Ref) -> VMProps:
    props = s.properties([vm], VM_PATHS).get(vm)
    if props is None:
        raise ObjectGone(f"{vm.value} vanished right after its clone")
    return VMProps.from_props(vm, props)
