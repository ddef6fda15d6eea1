"""The dummy provider's state: its VM records and the ``initial_state`` option (the inventory file that
holds them is ``vmpooler.providers.dummy_inventory``).

Kept apart from ``vmpooler.providers.dummy`` (the provider and its settings) so that both stay small.

``initial_state`` takes the shape of the original's spec option and backing file,
``{"pool": {<pool>: [<vm>, ...]}}``, or the shorter ``{<pool>: [<vm>, ...]}``. A ``<vm>`` is a name
(a finished clone with default values) or a mapping with the original's VM keys: ``name`` (required),
``hostname``, ``domain``, ``vm_template`` (the template path), ``powerstate``, ``vm_host``,
``boottime`` (epoch seconds or a YAML timestamp), ``disks`` (sizes in GB), ``snapshots`` (names),
``dummy_state`` (``UNKNOWN``, ``CLONING`` or ``RUNNING``, the default) and ``ready`` (true makes the
VM ``RUNNING``). ``template`` and ``poolname`` are accepted and ignored: in the original they always
hold the pool's name.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any

import attrs

from vmpooler.model import VMInfo

__all__ = [
    "CLONING",
    "HOSTS",
    "OFF",
    "ON",
    "RUNNING",
    "UNKNOWN",
    "DummyVM",
    "InitialVM",
    "fake_ip",
    "to_initial_state",
]

ON, OFF = "PoweredOn", "PoweredOff"
HOSTS = tuple(f"HOST{n}" for n in range(1, 11))
UNKNOWN, CLONING, RUNNING = "UNKNOWN", "CLONING", "RUNNING"
"""The original's ``dummy_state``: not cloned yet, clone in progress, clone done."""

_VM_KEYS = frozenset(
    {
        "name",
        "hostname",
        "domain",
        "vm_template",
        "template",
        "poolname",
        "ready",
        "boottime",
        "powerstate",
        "vm_host",
        "snapshots",
        "disks",
        "dummy_state",
    }
)


def fake_ip(name: str) -> str:
    """A stable fake address ``10.x.y.z`` derived from the VM name."""
    digest = hashlib.sha256(name.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2] % 254 + 1}"


@attrs.define(kw_only=True)
class DummyVM:
    """One dummy VM; also its form in the inventory file (``attrs.asdict``).

    ``boottime`` is when its clone started (as in the original); ``ready_at`` when it answers ready
    once cloned. Files written before ``dummy_state`` existed hold finished clones, hence its default.
    ``clone_id`` is random per clone: a reload makes new records, so a clone finds its own record by
    it, not by identity (None for VMs that were not cloned here, from ``initial_state`` or an old file).
    """

    name: str
    pool: str
    template: str
    domain: str
    hostname: str
    ip: str
    boottime: float
    ready_at: float
    powerstate: str = ON
    host: str = HOSTS[0]
    user: str | None = None
    disks: list[int] = attrs.Factory(list)
    snapshots: dict[str, list[int]] = attrs.Factory(dict)
    dummy_state: str = RUNNING
    clone_id: str | None = None

    @classmethod
    def clone(cls, name: str, pool: str, template: str, domain: str, *, now: float) -> DummyVM:
        """A VM whose clone starts ``now``: in state CLONING, powered on (as in the original)."""
        return cls(
            name=name,
            pool=pool,
            template=template,
            domain=domain,
            hostname=name,
            ip=fake_ip(name),
            boottime=now,
            ready_at=now,
            dummy_state=CLONING,
            clone_id=secrets.token_hex(8),
        )

    def info(self) -> VMInfo:
        return VMInfo(
            name=self.name,
            pool=self.pool,
            hostname=self.hostname,
            template=self.template,
            powerstate=self.powerstate,
            ip=self.ip,
            host=self.host,
            boottime=self.boottime,
        )


@attrs.frozen(kw_only=True)
class InitialVM:
    """One VM of the ``initial_state`` option (or of the original's backing file), checked at load."""

    pool: str
    name: str
    hostname: str | None = None
    domain: str | None = None
    template: str | None = None
    powerstate: str = ON
    host: str = HOSTS[0]
    boottime: float | None = None
    disks: tuple[int, ...] = ()
    snapshots: tuple[str, ...] = ()
    dummy_state: str = RUNNING

    def record(self, *, template: str, domain: str, now: float) -> DummyVM:
        """The VM record; ``template``/``domain`` fill what the entry leaves out (the pool's)."""
        return DummyVM(
            name=self.name,
            pool=self.pool,
            template=self.template or template,
            domain=self.domain or domain,
            hostname=self.hostname or self.name,
            ip=fake_ip(self.name),
            boottime=now if self.boottime is None else self.boottime,
            ready_at=0.0,
            powerstate=self.powerstate,
            host=self.host,
            disks=list(self.disks),
            snapshots={name: list(self.disks) for name in self.snapshots},
            dummy_state=self.dummy_state,
        )


def to_initial_state(value: object) -> tuple[InitialVM, ...]:
    """Converter of ``initial_state`` (shapes in the module docstring); None is an empty inventory."""
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(vm, InitialVM) for vm in value):
        return value  # already converted (the field's default, or settings built in code)
    if not isinstance(value, Mapping):
        raise TypeError(f"must be a mapping of pool names to lists of VMs, got {value!r}")
    pools = value
    if set(value) == {"pool"} and isinstance(value["pool"], Mapping):  # the original's shape
        pools = value["pool"]
    vms: list[InitialVM] = []
    for pool, entries in pools.items():
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise TypeError(f"{pool}: must be a list of VM names or VM mappings, got {entries!r}")
        vms.extend(_initial_vm(str(pool), entry, f"{pool}[{n}]") for n, entry in enumerate(entries))
    names = [vm.name for vm in vms]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"VM names must be unique, repeated: {', '.join(duplicates)}")
    return tuple(vms)


def _initial_vm(pool: str, entry: object, where: str) -> InitialVM:
    if isinstance(entry, str) and entry:
        return InitialVM(pool=pool, name=entry)
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: must be a VM name or a mapping, got {entry!r}")
    vm = {str(key).removeprefix(":"): item for key, item in entry.items()}
    unknown = sorted(set(vm) - _VM_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown VM keys {', '.join(unknown)}")
    name = _text(vm, "name", where)
    if name is None:
        raise ValueError(f"{where}: name is required")
    state = _choice(vm, "dummy_state", (UNKNOWN, CLONING, RUNNING), RUNNING, where)
    ready = vm.get("ready", False)
    if not isinstance(ready, bool):
        raise TypeError(f"{where}.ready: must be true or false, got {ready!r}")
    return InitialVM(
        pool=pool,
        name=name,
        hostname=_text(vm, "hostname", where),
        domain=_text(vm, "domain", where),
        template=_text(vm, "vm_template", where),
        powerstate=_choice(vm, "powerstate", (ON, OFF), ON, where),
        host=_text(vm, "vm_host", where) or HOSTS[0],
        boottime=_epoch(vm.get("boottime"), where),
        disks=_list_of(vm, "disks", int, where),
        snapshots=_list_of(vm, "snapshots", str, where),
        dummy_state=RUNNING if ready else state,
    )


def _text(vm: Mapping[str, Any], key: str, where: str) -> str | None:
    value = vm.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise TypeError(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return value


def _choice(vm: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str, where: str) -> str:
    value = vm.get(key, default)
    if value not in allowed:
        raise ValueError(f"{where}.{key}: must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


def _list_of(vm: Mapping[str, Any], key: str, kind: type, where: str) -> tuple[Any, ...]:
    value = vm.get(key) or []
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, kind) for v in value):
        raise TypeError(f"{where}.{key}: must be a list of {kind.__name__} values, got {value!r}")
    return tuple(value)


def _epoch(value: object, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return aware.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{where}.boottime: must be epoch seconds or a timestamp, got {value!r}")
    return float(value)
