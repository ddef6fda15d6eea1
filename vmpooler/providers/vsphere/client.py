"""The thin pyVmomi wrapper: one vCenter session and the few calls the provider makes.

This is the only module that imports pyVmomi. It hands out neutral values (:class:`Ref`, plain dicts
of property values converted to Python types, the attrs classes of ``values``) and raises only
``vmpooler.errors`` exceptions, so nothing else in the package knows SOAP.

Rules kept here:

* Every call is bounded: the HTTP socket timeout is ``vsphere_timeout``; tasks are waited for with
  our own polling loop and a deadline (never pyVim's ``WaitForTask``, which loops without one and
  misreads some simulator answers).
* Properties are read through the PropertyCollector only (never pyVmomi's lazy attribute access, which
  is one round trip per attribute and trips over unset properties such as ``snapshot``).
* Every SOAP call is counted by method name in ``Session.calls`` (tests prove round-trip counts).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import http.client
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pyVmomi
from pyVmomi import SoapStubAdapter, VmomiSupport

from vmpooler.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from vmpooler.providers.vsphere import specs
from vmpooler.providers.vsphere.values import (
    CredentialsRejected,
    Device,
    ObjectGone,
    Ref,
    SessionExpired,
    permanent,
)

__all__ = ["Session", "connect"]

vim: Any = pyVmomi.vim  # type: ignore[attr-defined]  # built at import time
vmodl: Any = pyVmomi.vmodl  # type: ignore[attr-defined]
_PC: Any = vmodl.query.PropertyCollector

T = TypeVar("T")

_PROBE_VERSION = "vim.version.version11"  # vSphere 6.5: every vCenter still speaks it; only used to ask
_PERMANENT_FAULTS = (
    "DuplicateName",
    "InvalidName",
    "InvalidArgument",
    "NotSupported",
    "NoPermission",
    "InvalidDatastorePath",
    "FileAlreadyExists",
    "InvalidLogin",
)


def connect(host: str, port: int, username: str, password: str, *, insecure: bool, timeout: float) -> Session:
    """Open and log in one vCenter session.

    Two calls with the probe API version learn what the server speaks (``RetrieveServiceContent``),
    then a stub of the newest version both sides know logs in. No version-discovery GET without a
    timeout (pyVim's ``SmartConnect`` does one).

    Raises:
        CredentialsRejected: vCenter refused the user name or password (non-transient).
        ProviderUnavailable / ProviderTimeout: vCenter cannot be reached or did not answer in time.
    """
    server = f"{host}:{port}"
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

    def stub(version: str) -> Any:
        return SoapStubAdapter(
            host=host, port=port, version=version, sslContext=context, httpConnectionTimeout=timeout
        )

    probe = Session(server, stub(_PROBE_VERSION), timeout)
    try:
        about = probe.invoke("RetrieveServiceContent", probe.instance.RetrieveContent, read=True).about
    finally:
        probe.drop()
    # the server's own version when pyVmomi knows it; else it is newer than pyVmomi: pyVmomi's newest
    version = VmomiSupport.versionMap.get(f"vim25/{about.apiVersion}") or VmomiSupport.newestVersions.GetName(
        "vim"
    )
    session = Session(server, stub(version), timeout)
    session.calls.update(probe.calls)
    try:
        session.login(username, password)
    except BaseException:
        session.drop()
        raise
    return session


class Session:
    """One logged-in vCenter session. Not thread-safe: the session pool lends it to one thread at a time.

    Attributes:
        server: ``host:port``, for messages.
        calls: SOAP calls made so far, by method name (property accessors as ``get:<name>``).
        broken: set when the connection failed; the pool then drops the session.
        last_used: monotonic time of the last call.
    """

    def __init__(self, server: str, stub: Any, timeout: float) -> None:
        self.server = server
        self.timeout = timeout
        self.calls: collections.Counter[str] = collections.Counter()
        self.broken = False
        self.last_used = time.monotonic()
        self._stub = stub
        self._count_calls(stub)
        self.instance: Any = vim.ServiceInstance("ServiceInstance", stub)
        self._content: Any = None

    def _count_calls(self, stub: Any) -> None:
        invoke, access = stub.InvokeMethod, stub.InvokeAccessor

        def counted_invoke(mo: Any, info: Any, args: Any, outerStub: Any = None) -> Any:
            self.calls[info.wsdlName] += 1
            return invoke(mo, info, args, outerStub)

        def counted_access(mo: Any, info: Any) -> Any:
            self.calls[f"get:{info.name}"] += 1
            return access(mo, info)

        stub.InvokeMethod, stub.InvokeAccessor = counted_invoke, counted_access

    # -- plumbing -----------------------------------------------------------------------------------

    @property
    def content(self) -> Any:
        """The ServiceContent, fetched once per session."""
        if self._content is None:
            self._content = self.invoke("RetrieveServiceContent", self.instance.RetrieveContent, read=True)
        return self._content

    def mo(self, ref: Ref) -> Any:
        """The pyVmomi object of ``ref``, bound to this session."""
        return getattr(vim, ref.type)(ref.value, self._stub)

    def invoke(self, what: str, call: Callable[[], T], *, read: bool = False) -> T:
        """Run one SOAP call and translate whatever it raises into ``vmpooler.errors``.

        A ``read`` (a lookup or property read, safe to repeat) whose connection the server dropped
        before answering is sent once more on a new connection: load balancers and vCenter close idle
        keep-alive connections, and the simulator drops one when it trips over a clone in progress.
        """
        self.last_used = time.monotonic()
        try:
            if read:
                try:
                    return call()
                except (
                    http.client.RemoteDisconnected,
                    ConnectionResetError,
                    BrokenPipeError,
                    ssl.SSLEOFError,
                ):
                    self.calls["reconnect"] += 1
            return call()
        except vim.fault.InvalidLogin as exc:
            raise CredentialsRejected(f"vCenter {self.server} rejected the user name or password") from exc
        except vim.fault.NotAuthenticated as exc:
            self.broken = True
            raise SessionExpired(f"vCenter {self.server}: session expired during {what}") from exc
        except vmodl.fault.ManagedObjectNotFound as exc:
            raise ObjectGone(f"vCenter {self.server}: {what}: the object no longer exists") from exc
        except vmodl.MethodFault as exc:
            raise fault_error(exc, f"vCenter {self.server}: {what}") from exc
        except ssl.SSLCertVerificationError as exc:
            self.broken = True
            message = f"vCenter {self.server}: TLS certificate not trusted ({exc.verify_message}); "
            raise permanent(ProviderUnavailable(message + "set insecure: true to skip the check")) from exc
        except TimeoutError as exc:
            self.broken = True
            raise ProviderTimeout(
                f"vCenter {self.server} did not answer {what} in {self.timeout:g}s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.broken = True
            raise ProviderUnavailable(
                f"vCenter {self.server}: {what} failed: {exc or type(exc).__name__}"
            ) from exc

    def login(self, username: str, password: str) -> None:
        """Log in; the session cookie is kept by the stub."""
        manager = self.content.sessionManager
        self.invoke("Login", lambda: manager.Login(username, password))

    def alive(self) -> bool:
        """One cheap call (``CurrentTime``): False when the session or connection is gone."""
        try:
            self.invoke("CurrentTime", self.instance.CurrentTime, read=True)
        except ProviderError:
            return False
        return True

    def drop(self) -> None:
        """Close the HTTP connections without logging out."""
        self._stub.DropConnections()

    def close(self) -> None:
        """Log out (best effort) and drop the HTTP connections."""
        if not self.broken and self._content is not None:
            with contextlib.suppress(ProviderError):
                self.invoke("Logout", self._content.sessionManager.Logout)
        self.drop()

    # -- properties ---------------------------------------------------------------------------------

    def properties(self, refs: Sequence[Ref], paths: Sequence[str]) -> dict[Ref, dict[str, Any]]:
        """``paths`` of every object in ``refs`` (all of one type) in one call; gone objects are left out."""
        if not refs:
            return {}
        kind = getattr(vim, refs[0].type)
        spec = _PC.FilterSpec(
            objectSet=[_PC.ObjectSpec(obj=self.mo(ref), skip=False) for ref in refs],
            propSet=[_PC.PropertySpec(type=kind, pathSet=list(paths))],
        )
        return self._retrieve(spec, "RetrievePropertiesEx")

    def children(self, parent: Ref, kind: str, paths: Sequence[str]) -> dict[Ref, dict[str, Any]]:
        """``paths`` of every direct child of type ``kind`` of the folder ``parent``, in one call."""
        traverse = _PC.TraversalSpec(name="children", type=vim.Folder, path="childEntity", skip=False)
        spec = _PC.FilterSpec(
            objectSet=[_PC.ObjectSpec(obj=self.mo(parent), skip=True, selectSet=[traverse])],
            propSet=[_PC.PropertySpec(type=getattr(vim, kind), pathSet=list(paths))],
        )
        return self._retrieve(spec, f"children of {parent.value}")

    def _retrieve(self, spec: Any, what: str) -> dict[Ref, dict[str, Any]]:
        collector = self.content.propertyCollector
        result = self.invoke(
            what, lambda: collector.RetrievePropertiesEx([spec], _PC.RetrieveOptions()), read=True
        )
        found: dict[Ref, dict[str, Any]] = {}
        while result is not None:
            for item in result.objects:
                found[ref_of(item.obj)] = {prop.name: to_python(prop.val) for prop in item.propSet}
            token = result.token
            if not token:
                break
            result = self.invoke(
                what, functools.partial(collector.ContinueRetrievePropertiesEx, token), read=True
            )
        return found

    def descendants(self, root: Ref, kinds: Sequence[str]) -> dict[Ref, str]:
        """Name of every object of ``kinds`` anywhere below ``root`` (a ContainerView; three calls)."""
        views = self.content.viewManager
        view = self.invoke(
            "CreateContainerView",
            lambda: views.CreateContainerView(self.mo(root), [getattr(vim, k) for k in kinds], True),
        )
        try:
            traverse = _PC.TraversalSpec(name="view", type=vim.view.ContainerView, path="view", skip=False)
            spec = _PC.FilterSpec(
                objectSet=[_PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                propSet=[_PC.PropertySpec(type=getattr(vim, k), pathSet=["name"]) for k in kinds],
            )
            return {ref: props.get("name", "") for ref, props in self._retrieve(spec, "view").items()}
        finally:
            self.invoke("DestroyView", view.DestroyView)

    # -- lookups ------------------------------------------------------------------------------------

    def find_by_path(self, path: str) -> Ref | None:
        """The object at an inventory path such as ``DC0/vm/Templates/centos``, or None."""
        index = self.content.searchIndex
        found = self.invoke(f"find {path!r}", lambda: index.FindByInventoryPath(path), read=True)
        return None if found is None else ref_of(found)

    def find_child(self, parent: Ref, name: str) -> Ref | None:
        """The direct child called ``name`` of a folder, or None."""
        index = self.content.searchIndex
        found = self.invoke(f"find {name!r}", lambda: index.FindChild(self.mo(parent), name), read=True)
        return None if found is None else ref_of(found)

    def root_folder(self) -> Ref:
        return ref_of(self.content.rootFolder)

    def create_folder(self, parent: Ref, name: str) -> Ref:
        """Create folder ``name`` in ``parent``; an existing one (a concurrent creator) is returned."""
        try:
            return ref_of(self.invoke(f"create folder {name!r}", lambda: self.mo(parent).CreateFolder(name)))
        except ProviderError as exc:
            if "DuplicateName" not in str(exc):
                raise
            existing = self.find_child(parent, name)
            if existing is None:
                raise
            return existing

    # -- tasks --------------------------------------------------------------------------------------

    def start(self, what: str, ref: Ref, method: str, *args: Any, **kwargs: Any) -> Ref:
        """Start task ``method`` on ``ref`` (Ref arguments are bound to this session); returns the task."""
        task = self.call(what, ref, method, *args, **kwargs)
        if not isinstance(task, Ref):
            raise ProviderError(f"vCenter {self.server}: {what}: no task returned")
        return task

    def call(self, what: str, ref: Ref, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` of ``ref``; Ref arguments are bound to this session, a result is converted."""
        target = self.mo(ref)
        args = tuple(self.mo(a) if isinstance(a, Ref) else a for a in args)
        kwargs = {k: self.mo(v) if isinstance(v, Ref) else v for k, v in kwargs.items()}
        return to_python(self.invoke(what, lambda: getattr(target, method)(*args, **kwargs)))

    def wait(self, task: Ref, what: str, timeout: float, stop: threading.Event) -> Any:
        """Poll ``task`` until it ends; its result (a Ref for an object), or raise its fault.

        Raises:
            ProviderTimeout: still running after ``timeout`` seconds (the task goes on in vCenter).
            ProviderUnavailable: ``stop`` was set while waiting.
        """
        deadline, delay = time.monotonic() + timeout, 0.02
        while True:
            info = self.properties([task], ["info.state", "info.error", "info.result"]).get(task, {})
            state = info.get("info.state")
            if state == "success":
                return info.get("info.result")
            if state == "error":
                error = info.get("info.error")
                raise fault_error(error, f"vCenter {self.server}: {what}")
            if state is None:
                raise ProviderError(f"vCenter {self.server}: {what}: the task vanished")
            if time.monotonic() + delay > deadline:
                raise ProviderTimeout(f"vCenter {self.server}: {what} still running after {timeout:g}s")
            if stop.wait(delay):
                raise ProviderUnavailable(f"vCenter {self.server}: {what}: the provider is stopping")
            delay = min(delay * 2, 1.0)

    def run(self, what: str, ref: Ref, method: str, *args: Any, timeout: float, stop: threading.Event) -> Any:
        """Start a task and wait for it."""
        return self.wait(self.start(what, ref, method, *args), what, timeout, stop)

    # -- VM details and changes (specs are built in ``specs``) ---------------------------------------

    def devices(self, vm: Ref) -> list[Device]:
        """The VM's virtual devices (one call)."""
        props = self.properties([vm], ["config.hardware.device"]).get(vm)
        if props is None:
            raise ObjectGone(f"vCenter {self.server}: {vm.value} no longer exists")
        return [specs.device_of(raw, ref_of) for raw in props.get("config.hardware.device", [])]

    def snapshots(self, vm: Ref) -> dict[str, Ref]:
        """The VM's snapshots by name (one call; ``snapshot`` is unset on a VM without any)."""
        props = self.properties([vm], ["snapshot"]).get(vm)
        if props is None:
            raise ObjectGone(f"vCenter {self.server}: {vm.value} no longer exists")
        return specs.snapshot_names(props.get("snapshot"), ref_of)

    def clone(self, template: Ref, folder: Ref, name: str, plan: specs.ClonePlan) -> Ref:
        """Start ``CloneVM_Task`` of ``template`` into ``folder``; returns the task."""
        spec = specs.clone_spec(self.mo, plan)
        return self.start(
            f"clone {name}", template, "CloneVM_Task", folder=self.mo(folder), name=name, spec=spec
        )

    def add_disk(
        self, vm: Ref, controller: Device, unit: int, size_gb: int, file_name: str, datastore: Ref | None
    ) -> Ref:
        """Start a reconfigure that adds a new thin disk; returns the task."""
        spec = specs.disk_add_spec(self.mo, controller, unit, size_gb, file_name, datastore)
        return self.start("add disk", vm, "ReconfigVM_Task", spec=spec)

    def add_delta_disks(self, vm: Ref, disks: Iterable[Device]) -> Ref:
        """Start a reconfigure that puts a delta disk on each of ``disks``; returns the task."""
        return self.start(
            "add delta disks", vm, "ReconfigVM_Task", spec=specs.delta_disk_spec(self.mo, disks)
        )

    def relocate(self, vm: Ref, host: Ref) -> Ref:
        """Start ``RelocateVM_Task`` to ``host`` (vMotion); returns the task."""
        return self.start("relocate", vm, "RelocateVM_Task", spec=vim.vm.RelocateSpec(host=self.mo(host)))


def ref_of(mo: Any) -> Ref:
    """The neutral reference of a pyVmomi managed object."""
    return Ref(type=mo._wsdlName, value=mo._moId)


def to_python(value: Any) -> Any:
    """Managed objects → Ref, arrays → lists, datetimes → epoch floats; data objects via ``specs``."""
    if isinstance(value, VmomiSupport.ManagedObject):
        return ref_of(value)
    if isinstance(value, list):  # pyVmomi arrays are list subclasses
        return [to_python(item) for item in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    return value  # data objects stay as they are; only client methods ask for paths that hold them


def fault_error(fault: Any, what: str) -> ProviderError:
    """A vim fault (pyVmomi's form of a task's ``LocalizedMethodFault``) as a ProviderError; permanent for
    faults no retry can fix."""
    if isinstance(fault, vmodl.fault.ManagedObjectNotFound):
        return ObjectGone(f"{what}: the object no longer exists")
    name = type(fault).__name__.rsplit(".", 1)[-1] if fault is not None else "unknown fault"
    message = getattr(fault, "msg", None) or ""
    exc = ProviderError(f"{what}: {name}: {message}" if message and message != name else f"{what}: {name}")
    return permanent(exc) if name in _PERMANENT_FAULTS else exc
