"""The vSphere provider's optional operations: disks, snapshots, template delta disks, migration at
checkout and the purge of unconfigured folders (as the original's vSphere provider).

Each function gets a leased session and an existing VM (or pool); the provider finds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from vmpooler.errors import ProviderError
from vmpooler.providers.vsphere.clone import compute_for
from vmpooler.providers.vsphere.inventory import HOST_PATHS, host_stats, join
from vmpooler.providers.vsphere.values import Device, Ref, VMProps, permanent

if TYPE_CHECKING:
    from vmpooler.providers.base import PoolSpec
    from vmpooler.providers.vsphere.client import Session
    from vmpooler.providers.vsphere.config import PoolSettings
    from vmpooler.providers.vsphere.inventory import Backend

__all__ = ["add_disk", "add_template_delta_disks", "create_snapshot", "migrate", "purge", "revert_snapshot"]

log = logging.getLogger(__name__)

_UNITS = range(16)  # SCSI unit numbers; the controller itself holds one (usually 7)
_DISKS_PER_CONTROLLER = 15


def add_disk(b: Backend, s: Session, ps: PoolSettings, dc: str, vm: VMProps, size_gb: int) -> None:
    """Add a thin, persistent disk of ``size_gb`` GB at the next free unit of the first SCSI controller
    with room, as ``[datastore] <vm>/<vm>_<n>.vmdk`` on the pool's datastore (else the VM's)."""
    devices = s.devices(vm.ref)
    disks = [d for d in devices if d.kind == "disk"]
    controller, unit = _free_slot(devices)
    if ps.datastore:
        datastore_name, datastore = ps.datastore, b.resolver.path(s, join(dc, "datastore", ps.datastore))
        if datastore is None:
            raise permanent(ProviderError(f"datastore {ps.datastore!r} does not exist in {dc}"))
    elif disks and disks[0].file_name and disks[0].file_name.startswith("["):
        datastore_name, datastore = disks[0].file_name[1:].split("]", 1)[0], disks[0].datastore
    else:
        raise permanent(ProviderError(f"pool has no datastore and {vm.name} has no disk to put one beside"))
    file_name = f"[{datastore_name}] {vm.name}/{vm.name}_{len(disks)}.vmdk"
    b.wait(s, s.add_disk(vm.ref, controller, unit, size_gb, file_name, datastore), f"add disk to {vm.name}")


def _free_slot(devices: list[Device]) -> tuple[Device, int]:
    controllers = sorted((d for d in devices if d.kind == "scsi"), key=lambda d: d.key)
    for controller in controllers:
        children = [d for d in devices if d.kind == "disk" and d.controller_key == controller.key]
        if len(children) >= _DISKS_PER_CONTROLLER:
            continue
        used = {controller.unit_number, *(d.unit_number for d in children)}
        free = [unit for unit in _UNITS if unit not in used]
        if free:
            return controller, free[0]
    raise permanent(ProviderError("the VM has no SCSI controller with a free unit"))


def create_snapshot(b: Backend, s: Session, vm: VMProps, snapshot: str) -> None:
    """Snapshot with memory and quiesced, as the original; a taken name is a permanent error."""
    if snapshot in s.snapshots(vm.ref):
        raise permanent(ProviderError(f"{vm.name} already has a snapshot called {snapshot!r}"))
    b.run(s, f"snapshot {vm.name}", vm.ref, "CreateSnapshot_Task", snapshot, "vmpooler", True, True)


def revert_snapshot(b: Backend, s: Session, vm: VMProps, snapshot: str) -> None:
    """Revert to the snapshot called ``snapshot``; a missing one is a permanent error."""
    found = s.snapshots(vm.ref).get(snapshot)
    if found is None:
        raise permanent(ProviderError(f"{vm.name} has no snapshot called {snapshot!r}"))
    b.run(s, f"revert {vm.name} to {snapshot}", found, "RevertToSnapshot_Task")


def add_template_delta_disks(
    b: Backend, s: Session, template: Ref, path: str, pool: Callable[[], Ref]
) -> bool:
    """Put a delta disk on each disk of the template that has none yet. Idempotent: returns False when
    every disk already has a parent (the layer exists).

    vCenter reconfigures no VM marked as template, so a template is turned into a VM (in resource pool
    ``pool()``) for the change and back into a template afterwards, whatever happens.
    """
    disks = [d for d in s.devices(template) if d.kind == "disk"]
    todo = [d for d in disks if not d.has_parent]
    if not todo:
        return False
    is_template = bool(s.properties([template], ["config.template"]).get(template, {}).get("config.template"))
    if is_template:
        s.call(f"unmark template {path}", template, "MarkAsVirtualMachine", pool())
    try:
        b.wait(s, s.add_delta_disks(template, todo), f"delta disks on {path}")
    finally:
        if is_template:
            s.call(f"mark template {path}", template, "MarkAsTemplate")
    return True


def migrate(b: Backend, s: Session, spec: PoolSpec, dc: str, vm: VMProps) -> str | None:
    """Move a checked-out VM to the next target host of its CPU architecture when its host is not a
    target; returns the new host's name, or None when it stays."""
    if vm.host is None:
        raise ProviderError(f"cannot tell which host {vm.name} runs on")
    current = host_stats(vm.host, s.properties([vm.host], HOST_PATHS).get(vm.host, {}))
    compute = compute_for(b, s, spec, dc)
    key = (dc, compute)
    where = f"vCenter {s.server}: cluster {spec.clone_target or compute.value}"
    b.hosts.ranking(key, lambda: b.resolver.hosts(s, compute), where)
    if b.hosts.is_target(key, current.name, current.architecture):
        log.info("no migration needed for %s on %s", vm.name, current.name)
        return None
    target_name, target = b.hosts.next_host(key, current.architecture)
    b.wait(s, s.relocate(vm.ref, target), f"migrate {vm.name} to {target_name}")
    log.info("migrated %s from %s to %s", vm.name, current.name, target_name)
    return target_name


def purge(
    b: Backend, s: Session, folders: Mapping[str, set[str]], allowlist: Collection[str]
) -> tuple[list[str], list[str]]:
    """Destroy the folders beside the pool folders that no pool uses, with the VMs in them (the original's
    rule). Unlike the original, templates are never destroyed, and a folder that still holds anything
    (a template, an allow-listed VM, a sub-folder) is kept.

    Args:
        folders: each parent folder path of a pool folder → the names of the pool folders in it.
        allowlist: folder and VM names never deleted.

    Returns:
        (what was deleted, what failed): VM and folder names.
    """
    removed: list[str] = []
    failed: list[str] = []
    for base, configured in sorted(folders.items()):
        base_ref = b.resolver.path(s, base)
        if base_ref is None:
            continue
        for ref, props in b.resolver.children(s, base_ref, "Folder", ["name"]).items():
            title = props.get("name", "")
            if title in configured or title in allowlist:
                continue
            _purge_folder(b, s, ref, join(base, title), allowlist, removed, failed)
    return removed, failed


def _purge_folder(
    b: Backend,
    s: Session,
    folder: Ref,
    path: str,
    allowlist: Collection[str],
    removed: list[str],
    failed: list[str],
) -> None:
    kept = 0
    vms = s.children(folder, "VirtualMachine", ["name", "runtime.powerState", "config.template"])
    for ref, props in vms.items():
        name = props.get("name", ref.value)
        if name in allowlist or props.get("config.template"):  # templates are never purged
            kept += 1
            continue
        try:
            if props.get("runtime.powerState") == "poweredOn":
                b.run(s, f"power off {name}", ref, "PowerOffVM_Task")
            b.run(s, f"destroy {name}", ref, "Destroy_Task")
            removed.append(name)
        except ProviderError as exc:
            log.error("purge: cannot destroy %s in %s: %s", name, path, exc)
            failed.append(name)
            kept += 1
    if kept or s.children(folder, "Folder", ["name"]):
        log.warning(
            "purge: %s kept: it still holds templates, allow-listed or undeletable VMs, or folders", path
        )
        return
    try:
        b.run(s, f"remove folder {path}", folder, "Destroy_Task")
        b.resolver.forget(path)
        removed.append(path.rsplit("/", 1)[-1])
        log.info("purge: removed unconfigured folder %s", path)
    except ProviderError as exc:
        log.error("purge: cannot remove folder %s: %s", path, exc)
        failed.append(path)
