"""Where things are in vCenter: inventory paths → references, cached for the provider's lifetime.

References are session-independent (:class:`Ref`), so one lookup serves every session. Only hits are
cached (a folder or template that appears later is found); an entry is dropped when vCenter says the
object is gone, and the caller looks it up again.

Paths follow the original: a pool's VMs live in ``<datacenter>/vm/<folder>``, its template at
``<datacenter>/vm/<template>``, datastores at ``<datacenter>/datastore/<name>``, networks at
``<datacenter>/network/<name>``, and the ``clone_target`` cluster anywhere under ``<datacenter>/host``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from vmpooler.errors import ProviderError
from vmpooler.providers.vsphere.values import (
    VM_PATHS,
    HostStats,
    ObjectGone,
    Ref,
    StaleReference,
    VMProps,
    permanent,
)

if TYPE_CHECKING:
    from vmpooler.providers.vsphere.client import Session
    from vmpooler.providers.vsphere.config import VSphereSettings
    from vmpooler.providers.vsphere.placement import HostSelector

__all__ = ["HOST_PATHS", "Backend", "Resolver", "host_stats", "join"]

_COMPUTE = ("ComputeResource", "ClusterComputeResource")

HOST_PATHS = (
    "name",
    "runtime.inMaintenanceMode",
    "overallStatus",
    "configIssue",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.overallMemoryUsage",
    "summary.hardware.cpuMhz",
    "summary.hardware.numCpuCores",
    "summary.hardware.memorySize",
    "summary.hardware.cpuModel",
)


def host_stats(ref: Ref, props: dict[str, Any]) -> HostStats:
    """A host's ``HOST_PATHS`` answer as :class:`HostStats` (utilization as the original computes it)."""
    cpu_used = props.get("summary.quickStats.overallCpuUsage")
    mem_used = props.get("summary.quickStats.overallMemoryUsage")
    cpu_size = props.get("summary.hardware.cpuMhz", 0) * props.get("summary.hardware.numCpuCores", 0)
    mem_size = props.get("summary.hardware.memorySize", 0) / 1024 / 1024
    return HostStats(
        ref=ref,
        name=props.get("name", ref.value),
        cpu_model=props.get("summary.hardware.cpuModel", "") or "",
        cpu_percent=None if cpu_used is None or not cpu_size else cpu_used / cpu_size * 100,
        memory_percent=None if mem_used is None or not mem_size else mem_used / mem_size * 100,
        maintenance=bool(props.get("runtime.inMaintenanceMode", False)),
        status=str(props.get("overallStatus", "gray")),
        config_issues=bool(props.get("configIssue")),
    )


class Resolver:
    """Cached path lookups shared by all sessions. Thread-safe; no lock is held during a remote call."""

    def __init__(self, default_datacenter: str | None) -> None:
        self._default_datacenter = default_datacenter
        self._lock = threading.Lock()
        self._paths: dict[str, Ref] = {}
        self._values: dict[tuple[Ref, str], Any] = {}
        self._host_names: dict[Ref, str] = {}
        self._first_datacenter: str | None = None

    def forget(self, path: str) -> None:
        """Drop a cached path (its object is gone)."""
        with self._lock:
            self._paths.pop(path, None)

    def stale(self, what: str) -> StaleReference:
        """Clear every cached lookup and return the error to raise: a cached reference is gone."""
        with self._lock:
            self._paths.clear()
            self._values.clear()
        return StaleReference(f"{what}: a cached reference is gone; lookups cleared")

    def find_child(self, session: Session, folder: Ref, name: str) -> Ref | None:
        """``Session.find_child`` of a cached folder; a vanished folder raises StaleReference."""
        try:
            return session.find_child(folder, name)
        except ObjectGone as exc:
            raise self.stale(f"vCenter {session.server}: folder {folder.value}") from exc

    def children(
        self, session: Session, folder: Ref, kind: str, paths: Sequence[str]
    ) -> dict[Ref, dict[str, Any]]:
        """``Session.children`` of a cached folder; a vanished folder raises StaleReference."""
        try:
            return session.children(folder, kind, paths)
        except ObjectGone as exc:
            raise self.stale(f"vCenter {session.server}: folder {folder.value}") from exc

    def datacenter(self, session: Session, name: str | None) -> str:
        """``name``, else the provider's ``datacenter``, else the first datacenter vCenter lists."""
        name = name or self._default_datacenter
        if name:
            return name
        with self._lock:
            if self._first_datacenter is not None:
                return self._first_datacenter
        found = session.children(session.root_folder(), "Datacenter", ["name"])
        if not found:
            raise permanent(ProviderError(f"vCenter {session.server} has no datacenter; set `datacenter`"))
        first = next(iter(found.values()))["name"]
        with self._lock:
            self._first_datacenter = first
        return str(first)

    def path(self, session: Session, path: str) -> Ref | None:
        """The object at inventory ``path`` or None (hits are cached)."""
        with self._lock:
            ref = self._paths.get(path)
        if ref is None:
            ref = session.find_by_path(path)
            if ref is not None:
                with self._lock:
                    self._paths[path] = ref
        return ref

    def value(self, session: Session, ref: Ref, prop: str) -> Any:
        """One property of an object that does not change (a cluster's root resource pool), cached."""
        with self._lock:
            if (ref, prop) in self._values:
                return self._values[ref, prop]
        props = session.properties([ref], [prop]).get(ref)
        if props is None or prop not in props:
            raise ObjectGone(f"vCenter {session.server}: {ref.value} has no {prop}")
        with self._lock:
            self._values[ref, prop] = props[prop]
        return props[prop]

    def folder(self, session: Session, datacenter: str, folder: str, *, create: bool = False) -> Ref | None:
        """The VM folder ``<datacenter>/vm/<folder>``; with ``create``, every missing level is made."""
        path = join(datacenter, "vm", folder)
        ref = self.path(session, path)
        if ref is not None or not create:
            return ref
        parent = self.path(session, join(datacenter, "vm"))
        if parent is None:
            raise permanent(ProviderError(f"vCenter {session.server}: no datacenter {datacenter!r}"))
        walked = join(datacenter, "vm")
        for level in [part for part in folder.split("/") if part]:
            walked = join(walked, level)
            found = self.path(session, walked)
            parent = found if found is not None else session.create_folder(parent, level)
        with self._lock:
            self._paths[path] = parent
        return parent

    def vm(self, session: Session, folder: Ref, name: str) -> VMProps | None:
        """The VM ``name`` directly in ``folder`` (two calls), or None."""
        ref = self.find_child(session, folder, name)
        if ref is None or ref.type != "VirtualMachine":
            return None
        try:
            props = session.properties([ref], VM_PATHS).get(ref)
        except ObjectGone:
            return None
        return None if props is None else VMProps.from_props(ref, props)

    def compute(self, session: Session, datacenter: str, name: str) -> Ref:
        """The cluster (or standalone host's compute resource) ``name`` under ``<datacenter>/host``."""
        direct = self.path(session, join(datacenter, "host", name))
        if direct is not None and direct.type in _COMPUTE:
            return direct
        host_folder = self.path(session, join(datacenter, "host"))
        if host_folder is None:
            raise permanent(ProviderError(f"vCenter {session.server}: no datacenter {datacenter!r}"))
        matches = [ref for ref, found in session.descendants(host_folder, _COMPUTE).items() if found == name]
        if not matches:
            raise permanent(ProviderError(f"vCenter {session.server}: no cluster {name!r} in {datacenter}"))
        with self._lock:
            self._paths[join(datacenter, "host", name)] = matches[0]
        return matches[0]

    def only_compute(self, session: Session, datacenter: str) -> Ref:
        """The datacenter's one cluster or standalone host, for pools without ``clone_target``."""
        host_folder = self.path(session, join(datacenter, "host"))
        found = session.descendants(host_folder, _COMPUTE) if host_folder is not None else {}
        if len(found) != 1:
            names = ", ".join(sorted(found.values())) or "none"
            raise permanent(
                ProviderError(
                    f"vCenter {session.server}: set clone_target; {datacenter} has clusters: {names}"
                )
            )
        return next(iter(found))

    def host_names(self, session: Session, hosts: set[Ref]) -> dict[Ref, str]:
        """Names of ``hosts``; the unknown ones are read in one call and cached."""
        with self._lock:
            unknown = [ref for ref in hosts if ref not in self._host_names]
        if unknown:
            found = session.properties(sorted(unknown), ["name"])
            with self._lock:
                self._host_names.update((ref, props.get("name", ref.value)) for ref, props in found.items())
        with self._lock:
            return {ref: self._host_names.get(ref, ref.value) for ref in hosts}

    def hosts(self, session: Session, compute: Ref) -> list[HostStats]:
        """State and load of every host of a cluster (two calls)."""
        members = session.properties([compute], ["host"]).get(compute, {}).get("host", [])
        found = session.properties(list(members), HOST_PATHS)
        stats = [host_stats(ref, props) for ref, props in found.items()]
        with self._lock:
            self._host_names.update((s.ref, s.name) for s in stats)
        return stats


def join(*parts: str) -> str:
    """An inventory path from parts, without doubled or trailing slashes."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


@attrs.frozen
class Backend:
    """What the provider's operations share: settings, lookups, host rankings and the stop signal."""

    settings: VSphereSettings
    resolver: Resolver
    hosts: HostSelector
    stop: threading.Event

    def wait(self, session: Session, task: Ref, what: str) -> Any:
        """Wait for ``task`` up to ``task_timeout``; see ``Session.wait``."""
        return session.wait(task, what, self.settings.task_timeout, self.stop)

    def run(self, session: Session, what: str, ref: Ref, method: str, *args: Any) -> Any:
        """Start task ``method`` on ``ref`` and wait for it up to ``task_timeout``."""
        return session.run(what, ref, method, *args, timeout=self.settings.task_timeout, stop=self.stop)
