"""DummyProvider: VMs that exist only in memory (and optionally a YAML file), for tests, development and
chaos testing. It implements the whole contract of ``vmpooler.providers.base``.

Options are the fields of :class:`DummySettings`: the Ruby dummy's (reference §5.2) plus ``seed``
(reproducible chaos), ``ready_delay`` and ``domain``. Times are fractional seconds (0 = instant, the
default); percentages are 0..100.

Where it differs from the Ruby dummy, on purpose:

* Nothing loops or polls. ``create_vm`` returns at once: the VM is in the inventory, powered on, with
  a fake IP, and ``vm_ready`` answers False until ``createvm_max_time * random() + ready_delay`` seconds
  have passed (the waiting is the VMActor's job). ``vm_ready`` is a single check; with
  ``vmready_fail_percent`` it raises ``ProviderError`` instead of returning.
* Destroy, disk, snapshot, revert and migrate sleep once for ``<op>_max_time * random()`` seconds,
  as the real call would block; the sleep is an ``Event.wait`` that ``stop()`` cuts short (the
  operation then raises ``ProviderUnavailable``). The inventory lock is never held while sleeping.
* A failure happens when ``random() * 100 < percent`` (0 never, 100 always), drawn from one
  ``random.Random(seed)``; failures raise (``CloneFailed`` for create, ``ProviderError`` otherwise)
  and change nothing: a failed clone leaves no VM behind.
* Destroying a missing VM succeeds. Taking a snapshot whose name exists, or reverting to one that
  does not, is a non-transient ``ProviderError``. A snapshot records the VM's disks; a revert restores
  them and powers the VM on.
* ``getvm_rename_percent`` / ``getvm_poweroff_percent`` change the stored VM (hostname
  ``DUMMY<name>`` / ``PoweredOff``), as a guest would; a powered-off VM is not ready.
* ``connection_pool_size`` is a semaphore around every call; waiting longer than
  ``connection_pool_timeout`` raises ``ProviderTimeout``.
* The file is rewritten atomically (temp file + ``os.replace``) after each change; a write error is
  logged and the in-memory inventory stays authoritative.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any, cast

import attrs
import yaml

from vmpooler.errors import CloneFailed, ProviderError, ProviderTimeout, ProviderUnavailable, VMNotFound
from vmpooler.model import VMInfo
from vmpooler.providers.base import (
    PoolSpec,
    Provider,
    ProviderSettings,
    non_negative,
    percent,
    string,
    to_float,
    to_int,
    unknown_pool,
)

__all__ = ["DummyProvider", "DummySettings", "fake_ip"]

log = logging.getLogger(__name__)

_ON, _OFF = "PoweredOn", "PoweredOff"
_HOSTS = tuple(f"HOST{n}" for n in range(1, 11))


def _optional_int(value: object) -> int | None:
    return None if value is None else to_int(value)


def _positive(_inst: object, _attr: attrs.Attribute[Any], value: int) -> None:
    if value < 1:
        raise ValueError(f"must be >= 1, got {value!r}")


def _seconds(default: float = 0.0) -> Any:
    return attrs.field(default=default, converter=to_float, validator=non_negative)


def _percent() -> Any:
    return attrs.field(default=0.0, converter=to_float, validator=percent)


@attrs.frozen(kw_only=True)
class DummySettings(ProviderSettings):
    """The dummy provider's options (see the module docstring)."""

    filename: str | None = attrs.field(default=None, validator=attrs.validators.optional(string))
    connection_pool_size: int = attrs.field(default=1, converter=to_int, validator=_positive)
    connection_pool_timeout: float = _seconds(10.0)
    migratevm_couldmove_percent: float = _percent()
    migratevm_max_time: float = _seconds()
    migratevm_fail_percent: float = _percent()
    getvm_poweroff_percent: float = _percent()
    getvm_rename_percent: float = _percent()
    createvm_max_time: float = _seconds()
    createvm_fail_percent: float = _percent()
    createdisk_max_time: float = _seconds()
    createdisk_fail_percent: float = _percent()
    createsnapshot_max_time: float = _seconds()
    createsnapshot_fail_percent: float = _percent()
    revertsnapshot_max_time: float = _seconds()
    revertsnapshot_fail_percent: float = _percent()
    destroyvm_max_shutdown_time: float = _seconds()
    destroyvm_max_time: float = _seconds()
    destroyvm_fail_percent: float = _percent()
    vmready_fail_percent: float = _percent()
    seed: int | None = attrs.field(default=None, converter=_optional_int)
    ready_delay: float = _seconds()
    domain: str = attrs.field(default="dummy.local", validator=string)


def fake_ip(name: str) -> str:
    """A stable fake address ``10.x.y.z`` derived from the VM name."""
    digest = hashlib.sha256(name.encode()).digest()
    return f"10.{digest[0]}.{digest[1]}.{digest[2] % 254 + 1}"


def _permanent(message: str) -> ProviderError:
    exc = ProviderError(message)
    exc.transient = False
    return exc


@attrs.define(kw_only=True)
class _VM:
    """One dummy VM; also its YAML form (``attrs.asdict``)."""

    name: str
    pool: str
    template: str
    domain: str
    hostname: str
    ip: str
    boottime: float
    ready_at: float
    powerstate: str = _ON
    host: str = _HOSTS[0]
    user: str | None = None
    disks: list[int] = attrs.Factory(list)
    snapshots: dict[str, list[int]] = attrs.Factory(dict)

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


class DummyProvider(Provider):
    """A fake provider with chaos knobs. Thread-safe: one lock guards the inventory."""

    config_class = DummySettings
    pool_option_keys = frozenset()

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        pools: Mapping[str, PoolSpec],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """See :meth:`Provider.__init__`; ``clock`` (epoch seconds) is injectable for tests."""
        super().__init__(name, settings, pools)
        self._settings = cast(DummySettings, settings)
        self._clock = clock
        self._rng = random.Random(self._settings.seed)
        self._rng_lock = threading.Lock()
        self._lock = threading.Lock()
        self._vms: dict[str, dict[str, _VM]] = {}
        self._connections = threading.BoundedSemaphore(self._settings.connection_pool_size)
        self._stopped = threading.Event()
        self._running = False
        self._save_lock = threading.Lock()
        self._version = self._saved_version = 0

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._load()
        self._stopped.clear()
        self._running = True
        self.log.info("dummy provider %s started with %d VMs", self.name, sum(map(len, self._vms.values())))

    def stop(self) -> None:
        was_running, self._running = self._running, False
        self._stopped.set()
        if was_running:  # never overwrite a file that failed to load
            self._save()
        self.log.info("dummy provider %s stopped", self.name)

    # -- queries ------------------------------------------------------------------------------------

    def list_vms(self, pool: str) -> list[VMInfo]:
        self.pool_spec(pool)
        with self._connection(), self._lock:
            return [vm.info() for _, vm in sorted(self._vms.get(pool, {}).items())]

    def get_vm(self, pool: str, name: str) -> VMInfo | None:
        self.pool_spec(pool)
        with self._connection():
            rename = self._chance(self._settings.getvm_rename_percent)
            poweroff = self._chance(self._settings.getvm_poweroff_percent)
            with self._lock:
                vm = self._vms.get(pool, {}).get(name)
                if vm is None:
                    return None
                before = (vm.hostname, vm.powerstate)
                vm.hostname = f"DUMMY{name}" if rename else vm.hostname
                vm.powerstate = _OFF if poweroff else vm.powerstate
                changed = before != (vm.hostname, vm.powerstate)
                info = vm.info()
        if changed:
            self.log.info("chaos: %s is now hostname=%s powerstate=%s", name, info.hostname, info.powerstate)
            self._save()
        return info

    # -- actions ------------------------------------------------------------------------------------

    def create_vm(self, pool: str, name: str) -> VMInfo:
        spec = self.pools.get(pool)
        if spec is None:
            raise unknown_pool(pool, error=CloneFailed)
        with self._connection():
            if self._chance(self._settings.createvm_fail_percent):
                raise CloneFailed(f"simulated clone failure of {name} in pool {pool}")
            now = self._clock()
            ready_at = now + self._duration(self._settings.createvm_max_time) + self._settings.ready_delay
            with self._lock:
                if any(name in vms for vms in self._vms.values()):
                    raise CloneFailed(f"a VM called {name} already exists", transient=False)
                domain = spec.domain or self._settings.domain
                vm = _VM(
                    name=name,
                    pool=pool,
                    template=spec.template,
                    domain=domain,
                    hostname=name,
                    ip=fake_ip(name),
                    boottime=now,
                    ready_at=ready_at,
                )
                self._vms.setdefault(pool, {})[name] = vm
                info = vm.info()
        self.log.debug("created %s in pool %s, ready in %.3fs", name, pool, ready_at - now)
        self._save()
        return info

    def vm_ready(self, pool: str, name: str) -> bool:
        self.pool_spec(pool)
        with self._connection():
            with self._lock:
                vm = self._require(pool, name)
                powered_on, ready_at, fqdn = vm.powerstate == _ON, vm.ready_at, f"{name}.{vm.domain}"
            if self._chance(self._settings.vmready_fail_percent):
                raise ProviderError(f"simulated: cannot connect to {fqdn}:22")
            return powered_on and self._clock() >= ready_at

    def destroy_vm(self, pool: str, name: str) -> None:
        self.pool_spec(pool)
        with self._connection():
            with self._lock:
                vm = self._vms.get(pool, {}).get(name)
                if vm is None:
                    self.log.debug("destroy %s: already gone", name)
                    return
                powered_on = vm.powerstate == _ON
            if self._chance(self._settings.destroyvm_fail_percent):
                raise ProviderError(f"simulated failure destroying {name}")
            if powered_on:
                self._pause(self._duration(self._settings.destroyvm_max_shutdown_time), "shutdown")
            self._pause(self._duration(self._settings.destroyvm_max_time), "destroy")
            with self._lock:
                self._vms.get(pool, {}).pop(name, None)
        self._save()

    # -- optional -----------------------------------------------------------------------------------

    def create_disk(self, pool: str, name: str, size_gb: int) -> None:
        if size_gb < 1:
            raise ValueError(f"disk size must be a positive number of GB, got {size_gb!r}")
        s = self._settings
        with self._simulate(
            pool, name, s.createdisk_fail_percent, s.createdisk_max_time, "create_disk"
        ) as vm:
            vm.disks.append(size_gb)

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        def absent(vm: _VM) -> None:
            if snapshot in vm.snapshots:
                raise _permanent(f"{name} already has a snapshot called {snapshot!r}")

        s = self._settings
        with self._simulate(
            pool,
            name,
            s.createsnapshot_fail_percent,
            s.createsnapshot_max_time,
            "create_snapshot",
            check=absent,
        ) as vm:
            vm.snapshots[snapshot] = list(vm.disks)

    def revert_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        def present(vm: _VM) -> None:
            if snapshot not in vm.snapshots:
                raise _permanent(f"{name} has no snapshot called {snapshot!r}")

        s = self._settings
        with self._simulate(
            pool,
            name,
            s.revertsnapshot_fail_percent,
            s.revertsnapshot_max_time,
            "revert_snapshot",
            check=present,
        ) as vm:
            vm.disks = list(vm.snapshots[snapshot])
            vm.powerstate = _ON

    def migrate_vm(self, pool: str, name: str) -> str | None:
        s = self._settings
        self.pool_spec(pool)
        if not self._chance(s.migratevm_couldmove_percent):
            with self._connection(), self._lock:
                self._require(pool, name)
            return None
        with self._simulate(pool, name, s.migratevm_fail_percent, s.migratevm_max_time, "migrate_vm") as vm:
            with self._rng_lock:
                vm.host = self._rng.choice([host for host in _HOSTS if host != vm.host])
            target = vm.host
        return target

    def tag_vm_user(self, pool: str, name: str, user: str) -> bool:
        with self._simulate(pool, name, 0.0, 0.0, "tag_vm_user") as vm:
            vm.user = user
        return True

    def purge_unconfigured(self, allowlist: Collection[str]) -> list[str]:
        allowed = set(allowlist)
        removed: list[str] = []
        with self._connection(), self._lock:
            for pool in [p for p in self._vms if p not in self.pools and p not in allowed]:
                for name in [n for n in self._vms[pool] if n not in allowed]:
                    del self._vms[pool][name]
                    removed.append(name)
                if not self._vms[pool]:
                    del self._vms[pool]
        if removed:
            self.log.info("purged %d VMs of unconfigured pools: %s", len(removed), ", ".join(sorted(removed)))
            self._save()
        return sorted(removed)

    # -- test helpers -------------------------------------------------------------------------------

    def inventory(self) -> dict[str, list[str]]:
        """Pool → sorted VM names, for every served pool and every pool that has VMs."""
        with self._lock:
            names: dict[str, list[str]] = {pool: [] for pool in self.pools}
            names.update((pool, sorted(vms)) for pool, vms in self._vms.items())
        return dict(sorted(names.items()))

    def remove_vm_behind_our_back(self, pool: str, name: str) -> None:
        """Make a VM vanish as if deleted outside vmpooler (for tests of the core's inventory checks)."""
        with self._lock:
            self._require(pool, name)
            del self._vms[pool][name]
        self._save()

    # -- internals ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[None]:
        """Hold one simulated backend connection for the duration of a call."""
        if not self._running:
            raise ProviderUnavailable(f"dummy provider {self.name} is not running")
        timeout = self._settings.connection_pool_timeout
        if not self._connections.acquire(timeout=timeout):
            raise ProviderTimeout(f"no free connection to dummy provider {self.name} after {timeout}s")
        try:
            yield
        finally:
            self._connections.release()

    @contextlib.contextmanager
    def _simulate(
        self,
        pool: str,
        name: str,
        fail_percent: float,
        max_time: float,
        what: str,
        check: Callable[[_VM], None] | None = None,
    ) -> Iterator[_VM]:
        """One simulated operation on an existing VM: check, maybe fail, sleep once, then let the
        caller change the VM under the inventory lock and persist the change."""
        self.pool_spec(pool)
        with self._connection():
            with self._lock:
                vm = self._require(pool, name)
                if check is not None:
                    check(vm)
            if self._chance(fail_percent):
                raise ProviderError(f"simulated {what} failure on {name}")
            self._pause(self._duration(max_time), what)
            with self._lock:
                vm = self._require(pool, name)
                if check is not None:
                    check(vm)
                yield vm
        self._save()

    def _require(self, pool: str, name: str) -> _VM:
        """The VM record; the caller holds ``self._lock``."""
        vm = self._vms.get(pool, {}).get(name)
        if vm is None:
            raise VMNotFound(f"no VM called {name} in pool {pool}")
        return vm

    def _chance(self, pct: float) -> bool:
        if pct <= 0:
            return False
        if pct >= 100:
            return True
        with self._rng_lock:
            return self._rng.random() * 100 < pct

    def _duration(self, max_time: float) -> float:
        if max_time <= 0:
            return 0.0
        with self._rng_lock:
            return max_time * self._rng.random()

    def _pause(self, seconds: float, what: str) -> None:
        if seconds > 0 and self._stopped.wait(seconds):
            raise ProviderUnavailable(f"dummy provider {self.name} stopped during {what}")

    # -- persistence --------------------------------------------------------------------------------

    def _load(self) -> None:
        path = self._settings.filename
        if path is None:
            return
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
            records = [_VM(**entry) for entry in data.get("vms", [])]
        except FileNotFoundError:
            self.log.info("inventory file %s does not exist yet; starting empty", path)
            return
        except (OSError, yaml.YAMLError, TypeError, AttributeError) as exc:
            raise _permanent(f"cannot load dummy inventory {path}: {exc}") from exc
        with self._lock:
            self._vms = {}
            for vm in records:
                self._vms.setdefault(vm.pool, {})[vm.name] = vm

    def _save(self) -> None:
        path = self._settings.filename
        if path is None:
            return
        with self._lock:
            self._version += 1
            version = self._version
            vms = [vm for pool in sorted(self._vms) for _, vm in sorted(self._vms[pool].items())]
            data = {"vms": [attrs.asdict(vm) for vm in vms]}
        with self._save_lock:
            if version <= self._saved_version:
                return  # a newer snapshot is already on disk
            try:
                _write_atomically(path, data)
            except (OSError, yaml.YAMLError):
                self.log.exception("cannot write dummy inventory %s; keeping it in memory", path)
                return
            self._saved_version = version


def _write_atomically(path: str, data: object) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".dummy-", suffix=".tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
