"""SOAP specs for the vSphere client, built from neutral plans; part of the client (with ``client.py`` the
only module that imports pyVmomi).

Each builder takes ``mo``, the client session's ``Ref`` → managed-object function, so references are
bound to the session that sends the spec.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
import pyVmomi

from vmpooler.providers.vsphere.values import Device, Ref

__all__ = [
    "ClonePlan",
    "clone_spec",
    "delta_disk_spec",
    "device_of",
    "disk_add_spec",
    "snapshot_names",
]

vim: Any = pyVmomi.vim  # type: ignore[attr-defined]  # built at import time

MO = Callable[[Ref], Any]

_LINKED = "moveChildMostDiskBacking"
_FULL = "moveAllDiskBackingsAndConsolidate"


@attrs.frozen(kw_only=True)
class ClonePlan:
    """Everything a clone needs besides the template, folder and name.

    Attributes:
        pool: the resource pool to run in (required when cloning a template).
        host: a host chosen by host selection, or None.
        datastore: the target datastore, or None for the template's.
        linked: share the template's base disks (``moveChildMostDiskBacking``) instead of copying them.
        annotation: the VM's notes.
        extra_config: extraConfig keys and values (``guestinfo.hostname``, ``mainMem.*``).
        nic: the template's first network card, when the pool sets ``network``.
        network: the port group (a Network or DistributedVirtualPortgroup) of ``network``.
        network_name: its name.
        dvs_uuid: the switch UUID of a distributed port group, else None.
        portgroup_key: the key of a distributed port group, else None.
    """

    pool: Ref | None = None
    host: Ref | None = None
    datastore: Ref | None = None
    linked: bool = True
    annotation: str = ""
    extra_config: dict[str, str] = attrs.Factory(dict)
    nic: Device | None = None
    network: Ref | None = None
    network_name: str | None = None
    dvs_uuid: str | None = None
    portgroup_key: str | None = None


def clone_spec(mo: MO, plan: ClonePlan) -> Any:
    """A ``VirtualMachineCloneSpec`` that powers the clone on (the original's)."""
    location = vim.vm.RelocateSpec(diskMoveType=_LINKED if plan.linked else _FULL)
    if plan.pool is not None:
        location.pool = mo(plan.pool)
    if plan.host is not None:
        location.host = mo(plan.host)
    if plan.datastore is not None:
        location.datastore = mo(plan.datastore)
    config = vim.vm.ConfigSpec(
        annotation=plan.annotation,
        extraConfig=[vim.option.OptionValue(key=k, value=v) for k, v in plan.extra_config.items()],
    )
    if plan.nic is not None and plan.network is not None:
        config.deviceChange = [_nic_change(mo, plan)]
    return vim.vm.CloneSpec(location=location, config=config, powerOn=True, template=False)


def _nic_change(mo: MO, plan: ClonePlan) -> Any:
    assert plan.nic is not None and plan.network is not None
    nic = type(plan.nic.raw)()  # same card type as the template's (vmxnet3, e1000, ...)
    nic.key = plan.nic.key
    nic.deviceInfo = vim.Description(label=plan.nic.label, summary=plan.network_name or "")
    if plan.dvs_uuid is not None:
        port = vim.dvs.PortConnection(switchUuid=plan.dvs_uuid, portgroupKey=plan.portgroup_key)
        nic.backing = vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port)
    else:
        nic.backing = vim.vm.device.VirtualEthernetCard.NetworkBackingInfo(
            deviceName=plan.network_name, network=mo(plan.network), useAutoDetect=False
        )
    nic.addressType = "assigned"
    nic.connectable = vim.vm.device.VirtualDevice.ConnectInfo(
        allowGuestControl=True, startConnected=True, connected=True
    )
    return vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)


def disk_add_spec(
    mo: MO, controller: Device, unit: int, size_gb: int, file_name: str, datastore: Ref | None
) -> Any:
    """A ``ConfigSpec`` adding one new thin, persistent disk of ``size_gb`` GB."""
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
        fileName=file_name, diskMode="persistent", thinProvisioned=True
    )
    if datastore is not None:
        backing.datastore = mo(datastore)
    disk = vim.vm.device.VirtualDisk(
        key=-1,
        backing=backing,
        capacityInKB=size_gb * 1024 * 1024,
        controllerKey=controller.key,
        unitNumber=unit,
    )
    change = vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk)
    return vim.vm.ConfigSpec(deviceChange=[change])


def delta_disk_spec(mo: MO, disks: Iterable[Device]) -> Any:
    """A ``ConfigSpec`` that puts a new delta disk on top of each disk (the template delta-disk layer)."""
    changes = []
    for disk in disks:
        old = disk.raw
        backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=f"[{_datastore_name(old.backing.fileName)}]",
            diskMode=old.backing.diskMode,
            parent=old.backing,
        )
        if disk.datastore is not None:
            backing.datastore = mo(disk.datastore)
        new = vim.vm.device.VirtualDisk(
            key=old.key,
            backing=backing,
            capacityInKB=old.capacityInKB,
            controllerKey=old.controllerKey,
            unitNumber=old.unitNumber,
        )
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="remove", device=old))
        changes.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=new))
    return vim.vm.ConfigSpec(deviceChange=changes)


def _datastore_name(file_name: str) -> str:
    return file_name[1 : file_name.index("]")] if file_name.startswith("[") and "]" in file_name else ""


def device_of(raw: Any, ref_of: Callable[[Any], Ref]) -> Device:
    """The neutral view of one ``VirtualDevice``."""
    label = getattr(getattr(raw, "deviceInfo", None), "label", "") or ""
    common = {"key": raw.key, "label": label, "controller_key": raw.controllerKey, "raw": raw}
    if isinstance(raw, vim.vm.device.VirtualDisk):
        backing = raw.backing
        datastore = getattr(backing, "datastore", None)
        return Device(
            kind="disk",
            unit_number=raw.unitNumber,
            file_name=getattr(backing, "fileName", None),
            datastore=None if datastore is None else ref_of(datastore),
            has_parent=getattr(backing, "parent", None) is not None,
            **common,
        )
    if isinstance(raw, vim.vm.device.VirtualSCSIController):
        return Device(kind="scsi", unit_number=raw.scsiCtlrUnitNumber, **common)
    if isinstance(raw, vim.vm.device.VirtualEthernetCard):
        return Device(kind="nic", unit_number=raw.unitNumber, **common)
    return Device(kind="other", unit_number=getattr(raw, "unitNumber", None), **common)


def snapshot_names(info: Any, ref_of: Callable[[Any], Ref]) -> dict[str, Ref]:
    """Every snapshot in a ``VirtualMachineSnapshotInfo`` tree by name (the first of a repeated name wins)."""
    found: dict[str, Ref] = {}
    stack = list(reversed(getattr(info, "rootSnapshotList", None) or []))
    while stack:
        tree = stack.pop()
        found.setdefault(tree.name, ref_of(tree.snapshot))
        stack.extend(reversed(tree.childSnapshotList or []))
    return found
