"""Neutral values the vSphere client hands out, and the package's error subclasses.

Nothing here imports pyVmomi: the provider's modules work with these, the client converts.
"""

from __future__ import annotations

from typing import Any, TypeVar

import attrs

from vmpooler.errors import ProviderError, ProviderUnavailable

__all__ = [
    "VM_PATHS",
    "CredentialsRejected",
    "Device",
    "HostStats",
    "ObjectGone",
    "Ref",
    "SessionExpired",
    "StaleReference",
    "VMProps",
    "permanent",
]

E = TypeVar("E", bound=ProviderError)

VM_PATHS = (
    "name",
    "runtime.powerState",
    "runtime.host",
    "runtime.bootTime",
    "guest.hostName",
    "guest.ipAddress",
    "guest.toolsRunningStatus",
    "config.template",
)
"""The VM properties one inventory call reads. Unset ones are simply absent from the answer."""


def permanent(exc: E) -> E:
    """Mark ``exc`` non-transient (no retry can fix it) and return it."""
    exc.transient = False
    return exc


class CredentialsRejected(ProviderUnavailable):
    """vCenter refused the user name or password. Non-transient: only a config change fixes it."""

    transient = False
    metric_label = "credentials_rejected"


class SessionExpired(ProviderUnavailable):
    """The session was logged out (idle timeout, vCenter restart); the call did not run."""

    metric_label = "session_expired"


class ObjectGone(ProviderError):
    """A managed object referred to was deleted meanwhile (``ManagedObjectNotFound``)."""

    transient = False
    metric_label = "object_gone"


class StaleReference(ObjectGone):
    """A cached folder or template reference no longer exists (deleted and re-created, or a vCenter
    rebuilt); the lookup cache was cleared, and the operation may be run again."""

    transient = True
    metric_label = "stale_reference"


@attrs.frozen(order=True)
class Ref:
    """A managed object reference, independent of any session: ``Ref("VirtualMachine", "vm-42")``."""

    type: str
    value: str


@attrs.frozen(kw_only=True)
class VMProps:
    """The properties of one VM the provider uses (``VM_PATHS``)."""

    ref: Ref
    name: str
    powerstate: str | None = None
    host: Ref | None = None
    boottime: float | None = None
    hostname: str | None = None
    ip: str | None = None
    tools_running: bool = False
    template: bool = False

    @classmethod
    def from_props(cls, ref: Ref, props: dict[str, Any]) -> VMProps:
        """Build from a ``Session.properties``/``children`` answer for ``VM_PATHS``."""
        return cls(
            ref=ref,
            name=props.get("name", ""),
            powerstate=props.get("runtime.powerState"),
            host=props.get("runtime.host"),
            boottime=props.get("runtime.bootTime"),
            hostname=props.get("guest.hostName") or None,
            ip=props.get("guest.ipAddress") or None,
            tools_running=props.get("guest.toolsRunningStatus") == "guestToolsRunning",
            template=bool(props.get("config.template", False)),
        )


@attrs.frozen(kw_only=True)
class Device:
    """One virtual device of a VM, as the provider needs to see it.

    Attributes:
        key: the device key.
        kind: ``disk``, ``scsi`` (a SCSI controller), ``nic`` or ``other``.
        label: its label (``Hard disk 1``).
        controller_key: the controller a disk hangs on.
        unit_number: its unit on that controller (a SCSI controller: its own unit, usually 7).
        file_name: a disk's backing file (``[ds] vm/vm.vmdk``).
        datastore: a disk's datastore.
        has_parent: a disk's backing already has a parent (a delta disk).
        raw: the SDK object, opaque outside the client (used to build changes).
    """

    key: int
    kind: str
    label: str = ""
    controller_key: int | None = None
    unit_number: int | None = None
    file_name: str | None = None
    datastore: Ref | None = None
    has_parent: bool = False
    raw: Any = attrs.field(default=None, eq=False, repr=False)


@attrs.frozen(kw_only=True)
class HostStats:
    """One ESXi host's state and load, for host selection.

    Attributes:
        ref: the host.
        name: its name (how vCenter lists it).
        cpu_model: ``summary.hardware.cpuModel``; its fifth word is the "architecture" the original groups by.
        cpu_percent: CPU in use as a percentage of cores × MHz; None when unknown.
        memory_percent: memory in use as a percentage of its memory size; None when unknown.
        maintenance: in maintenance mode.
        status: ``overallStatus`` (``green``, ``yellow``, ``red``, ``gray``).
        config_issues: it has configuration issues.
    """

    ref: Ref
    name: str
    cpu_model: str = ""
    cpu_percent: float | None = None
    memory_percent: float | None = None
    maintenance: bool = False
    status: str = "gray"
    config_issues: bool = False

    @property
    def architecture(self) -> str:
        """The word of the CPU model the original compares hosts by: the fifth (``v4`` in "Intel(R) Xeon(R)
        CPU E5-2680 v4 @ 2.40GHz", the CPU generation); the whole model when it has fewer words."""
        words = self.cpu_model.split()
        return words[4] if len(words) > 4 else self.cpu_model
