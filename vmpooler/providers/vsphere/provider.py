"""VSphereProvider: pools of VMs cloned from vSphere templates, on pyVmomi.

Each method leases one vCenter session from a bounded pool (``sessions``), does a few bounded calls
through the client and returns ``VMInfo`` values. Round trips per call, once the lookups are cached:
``list_vms`` 1 (one PropertyCollector call over the pool folder's children), ``get_vm`` 2,
``vm_ready`` 2 (+ one TCP connect for ``ssh``), ``destroy_vm`` 2 + 2 per task.

Readiness (``ready_check``): ``ssh`` (default, the original's) is one TCP connect to port 22 of
``<vm>.<domain>``, or of the guest IP (else the bare name) when the pool has no domain; a refused
connect raises ``ProviderError`` whose message the core records as ``open_socket_error``. ``tools``
wants VMware Tools running, ``poweron`` only a powered-on VM (for labs and the simulator, which has no
guest network).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import ipaddress
import re
import socket
import threading
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar, cast

from vmpooler.errors import CloneFailed, ProviderError, ProviderUnavailable, VMNotFound
from vmpooler.model import VMInfo
from vmpooler.providers.base import ConnectionStats, PoolSpec, Provider, ProviderSettings, unknown_pool
from vmpooler.providers.vsphere import client, extras
from vmpooler.providers.vsphere.clone import clone_vm, compute_for
from vmpooler.providers.vsphere.config import POOL_KEYS, PoolSettings, VSphereSettings
from vmpooler.providers.vsphere.inventory import Backend, Resolver, join
from vmpooler.providers.vsphere.placement import HostSelector
from vmpooler.providers.vsphere.sessions import SessionPool
from vmpooler.providers.vsphere.values import VM_PATHS, ObjectGone, Ref, StaleReference, VMProps

if TYPE_CHECKING:
    from vmpooler.providers.adaptive import AdaptiveTimeout
    from vmpooler.providers.vsphere.client import Session

__all__ = ["POOL_OPTION_KEYS", "VSphereProvider"]

T = TypeVar("T")

POOL_OPTION_KEYS = POOL_KEYS

_POWER = {"poweredOn": "PoweredOn", "poweredOff": "PoweredOff", "suspended": "PoweredOff"}
_NO_ADDRESS = re.compile(r"^(0|169)\.(0|254)\.\d+\.\d+$")  # the original's "not a real address yet"


def usable_ip(ip: str | None) -> str | None:
    """The guest IP, unless it is none yet (``0.0.x.x``, link-local ``169.254.x.x`` and the like)."""
    if not ip or _NO_ADDRESS.match(ip):
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(ip)
        return ip
    return None


class VSphereProvider(Provider):
    """VMs cloned from vSphere templates. Thread-safe: state is the session pool and locked caches."""

    config_class = VSphereSettings
    pool_config_class = PoolSettings
    pool_option_keys = POOL_OPTION_KEYS

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        pools: Mapping[str, PoolSpec],
    ) -> None:
        """See :meth:`Provider.__init__`. No I/O.

        Raises:
            ConfigError: a pool's vSphere keys are invalid (``folder`` missing, wrong types).
        """
        super().__init__(name, settings, pools)
        s = self._settings = cast(VSphereSettings, settings)
        self._pool_settings = {
            pool: PoolSettings.from_options(spec.options, path=f":pools:.{pool}")
            for pool, spec in self.pools.items()
        }
        host, port = s.address
        self.server = f"{host}:{port}"
        opener = functools.partial(
            client.connect, host, port, s.username, s.password, insecure=s.insecure, timeout=s.vsphere_timeout
        )
        self._sessions = SessionPool(
            opener,
            server=self.server,
            size=s.pool_size(len(self.pools)),
            timeout=s.connection_pool_timeout,
            max_tries=s.max_tries,
            retry_factor=s.retry_factor,
        )
        self._stop = threading.Event()
        self._backend = Backend(
            settings=s,
            resolver=Resolver(s.datacenter),
            hosts=HostSelector(s.host_selection_max_age, s.utilization_limit),
            stop=self._stop,
        )
        self._started = False

    @property
    def calls(self) -> collections.Counter[str]:
        """SOAP calls made so far, by method name (for tests and benchmarks)."""
        return self._sessions.calls

    def use_adaptive_timeout(self, adaptive: AdaptiveTimeout | None) -> None:
        """Wait for a free vCenter session as long as ``adaptive`` says (see the base class)."""
        super().use_adaptive_timeout(adaptive)
        self._sessions.use_adaptive_timeout(adaptive)

    def connection_stats(self) -> ConnectionStats:
        return self._sessions.stats()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Mark the provider running and open the first session in the background, to report problems
        early. It neither blocks nor raises for an unreachable vCenter or rejected credentials (the
        worker must boot within its boot timeout, and must not crash-loop): they are logged, and every
        call raises them, fast inside the connect back-off, until vCenter answers."""
        self._stop.clear()
        self._started = True
        threading.Thread(target=self._first_connect, name=f"vsphere-{self.name}-connect", daemon=True).start()

    def _first_connect(self) -> None:
        try:
            with self._sessions.lease():
                pass
        except ProviderError as exc:
            self.log.error("vsphere provider %s: %s", self.name, exc)
        else:
            self.log.info("vsphere provider %s connected to %s", self.name, self.server)

    def stop(self) -> None:
        self._started = False
        self._stop.set()
        self._sessions.close()
        self.log.info("vsphere provider %s stopped", self.name)

    # -- queries ------------------------------------------------------------------------------------

    def list_vms(self, pool: str) -> list[VMInfo]:
        spec, ps = self._pool(pool)

        def inventory(s: Session) -> list[VMInfo]:
            if ps.folder is None:  # nowhere for the pool's VMs to be (its clones fail)
                return []
            dc = self._backend.resolver.datacenter(s, ps.datacenter)
            folder = self._backend.resolver.folder(s, dc, ps.folder)
            if folder is None:
                return []
            children = self._backend.resolver.children(s, folder, "VirtualMachine", VM_PATHS)
            vms = [VMProps.from_props(ref, props) for ref, props in children.items()]
            return self._infos(s, spec, [vm for vm in vms if not vm.template])

        return self._run(inventory)

    def get_vm(self, pool: str, name: str) -> VMInfo | None:
        spec, _ = self._pool(pool)
        return self._run(lambda s: self._with_vm(s, pool, name, lambda vm: self._infos(s, spec, [vm])[0]))

    # -- actions ------------------------------------------------------------------------------------

    def create_vm(self, pool: str, name: str) -> VMInfo:
        if pool not in self.pools:
            raise unknown_pool(pool, error=CloneFailed)
        spec, ps = self._pool(pool)

        def create(s: Session) -> VMInfo:
            vm = clone_vm(self._backend, s, spec, ps, name)
            self.log.info("cloned %s in pool %s", name, pool)
            return self._infos(s, spec, [vm])[0]

        return self._run(create)

    def vm_ready(self, pool: str, name: str) -> bool:
        spec, _ = self._pool(pool)
        vm = self._run(lambda s: self._with_vm(s, pool, name, lambda vm: vm))
        if vm is None:
            raise VMNotFound(f"{name} does not exist in pool {pool}")
        if vm.powerstate != "poweredOn":
            return False
        check = self._settings.ready_check
        if check == "poweron":
            return True
        if check == "tools":
            return vm.tools_running
        return self._ssh_ready(spec, vm)

    def _ssh_ready(self, spec: PoolSpec, vm: VMProps) -> bool:
        target = f"{vm.name}.{spec.domain}" if spec.domain else usable_ip(vm.ip) or vm.name
        port, timeout = self._settings.ready_check_port, self._settings.ready_check_timeout
        try:
            with socket.create_connection((target, port), timeout=timeout):
                return True
        except OSError as exc:
            raise ProviderError(f"cannot connect to {target}:{port}: {exc}") from exc

    def destroy_vm(self, pool: str, name: str) -> None:
        self._pool(pool)
        b = self._backend

        def destroy(s: Session) -> None:
            vm = self._with_vm(s, pool, name, lambda vm: vm)
            if vm is None:
                return
            try:
                if vm.powerstate == "poweredOn":
                    b.run(s, f"power off {name}", vm.ref, "PowerOffVM_Task")
                b.run(s, f"destroy {name}", vm.ref, "Destroy_Task")
            except ObjectGone:
                return  # deleted meanwhile: destroyed all the same
            self.log.info("destroyed %s in pool %s", name, pool)

        self._run(destroy)

    # -- optional -----------------------------------------------------------------------------------

    def create_disk(self, pool: str, name: str, size_gb: int) -> None:
        if size_gb < 1:
            raise ValueError(f"disk size must be a positive number of GB, got {size_gb!r}")
        _, ps = self._pool(pool)
        self._on_vm(pool, name, lambda s, dc, vm: extras.add_disk(self._backend, s, ps, dc, vm, size_gb))

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        self._on_vm(pool, name, lambda s, dc, vm: extras.create_snapshot(self._backend, s, vm, snapshot))

    def revert_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        self._on_vm(pool, name, lambda s, dc, vm: extras.revert_snapshot(self._backend, s, vm, snapshot))

    def migrate_vm(self, pool: str, name: str) -> str | None:
        spec, _ = self._pool(pool)
        if not self._settings.migration_enabled:
            self._on_vm(pool, name, lambda s, dc, vm: None)
            return None
        return self._on_vm(pool, name, lambda s, dc, vm: extras.migrate(self._backend, s, spec, dc, vm))

    def tag_vm_user(self, pool: str, name: str, user: str) -> bool:
        """Nothing to record (the original does not tag either); raises VMNotFound for a missing VM."""
        self._on_vm(pool, name, lambda s, dc, vm: None)
        return True

    def prepare_template(self, pool: str) -> None:
        """Add the template delta-disk layer when ``create_template_delta_disks`` is on (idempotent)."""
        spec, ps = self._pool(pool)
        if not self._settings.create_template_delta_disks:
            return

        def prepare(s: Session) -> None:
            dc = self._backend.resolver.datacenter(s, ps.datacenter)
            path = join(dc, "vm", spec.template)
            template = self._backend.resolver.path(s, path)
            if template is None:
                raise ProviderError(
                    f"pool {pool} specifies a template VM of {spec.template} which does not exist"
                )

            def resource_pool() -> Ref:
                return self._backend.resolver.value(
                    s, compute_for(self._backend, s, spec, dc), "resourcePool"
                )

            if extras.add_template_delta_disks(self._backend, s, template, path, resource_pool):
                self.log.info("delta disks added to template %s", path)

        self._run(prepare)

    def purge_unconfigured(self, allowlist: Collection[str]) -> list[str]:
        allowed = set(allowlist)

        def purge(s: Session) -> list[str]:
            folders: dict[str, set[str]] = collections.defaultdict(set)
            for spec in self.pools.values():
                ps = self._pool_settings[spec.name]
                if ps.folder is None:
                    continue
                parent, _, title = ps.folder.strip("/").rpartition("/")
                folders[join(self._backend.resolver.datacenter(s, ps.datacenter), "vm", parent)].add(title)
            removed, failed = extras.purge(self._backend, s, folders, allowed)
            if failed:
                raise ProviderError(f"purge removed {sorted(removed)} but failed on {sorted(failed)}")
            return sorted(removed)

        return self._run(purge)

    # -- internals ----------------------------------------------------------------------------------

    def _pool(self, pool: str) -> tuple[PoolSpec, PoolSettings]:
        return self.pool_spec(pool), self._pool_settings[pool]

    @contextlib.contextmanager
    def _lease(self) -> Iterator[Session]:
        if not self._started:
            raise ProviderUnavailable(f"vsphere provider {self.name} is not running")
        with self._sessions.lease() as session:
            yield session

    def _run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` on a leased session, and once more

        * on a fresh session when the first call failed because the session had expired or its
          connection had dropped (a restarted vCenter, a stale keep-alive connection): safe, because the
          first call of every operation here is a lookup. A timeout is not retried (it would only
          double the wait);
        * after a cached folder turned out to be gone (``StaleReference``: the lookups were cleared).
        """
        retried: set[type[ProviderError]] = set()
        while True:
            with self._lease() as session:
                before = session.calls.total()
                try:
                    return work(session)
                except ProviderUnavailable as exc:
                    first = session.calls.total() == before + 1
                    if ProviderUnavailable in retried or not first or not session.broken:
                        raise
                    retried.add(ProviderUnavailable)
                    self.log.info("vCenter %s: %s; retrying on a new session", self.server, exc)
                except StaleReference as exc:
                    if StaleReference in retried:
                        raise
                    retried.add(StaleReference)
                    self.log.info("vCenter %s: %s; retrying", self.server, exc)

    def _find(self, s: Session, pool: str, name: str) -> tuple[str, VMProps | None]:
        """The pool's datacenter and its VM ``name`` (None when there is none; a template is no pool VM)."""
        ps = self._pool_settings[pool]
        dc = self._backend.resolver.datacenter(s, ps.datacenter)
        folder = None if ps.folder is None else self._backend.resolver.folder(s, dc, ps.folder)
        vm = None if folder is None else self._backend.resolver.vm(s, folder, name)
        return dc, None if vm is None or vm.template else vm

    def _with_vm(self, s: Session, pool: str, name: str, then: Callable[[VMProps], T]) -> T | None:
        vm = self._find(s, pool, name)[1]
        return None if vm is None else then(vm)

    def _on_vm(self, pool: str, name: str, work: Callable[[Session, str, VMProps], T]) -> T:
        """Run ``work(session, datacenter, vm)`` on an existing VM; ``VMNotFound`` when there is none."""
        self._pool(pool)

        def on_vm(s: Session) -> T:
            dc, vm = self._find(s, pool, name)
            if vm is None:
                raise VMNotFound(f"{name} does not exist in pool {pool}")
            try:
                return work(s, dc, vm)
            except StaleReference:
                raise
            except ObjectGone as exc:
                raise VMNotFound(f"{name} vanished from pool {pool}") from exc

        return self._run(on_vm)

    def _infos(self, s: Session, spec: PoolSpec, vms: list[VMProps]) -> list[VMInfo]:
        hosts = self._backend.resolver.host_names(s, {vm.host for vm in vms if vm.host is not None})
        return [
            VMInfo(
                name=vm.name,
                pool=spec.name,
                hostname=vm.hostname,
                template=spec.template,
                powerstate=_POWER.get(vm.powerstate or ""),
                ip=usable_ip(vm.ip),
                host=None if vm.host is None else hosts.get(vm.host),
                boottime=vm.boottime,
            )
            for vm in vms
        ]
