"""DummyProvider: VMs that exist only in memory (and optionally a YAML file), for tests, development and
chaos testing. It implements the whole contract of ``vmpooler.providers.base``.

Its options, one field of :class:`DummySettings` each, are listed in ``vmpooler.providers.dummy_settings``:
every key the original dummy reads, with the original's meaning, plus ``seed``, ``ready_delay`` and
``domain``. With none set every call is instant and never fails: the zero-delay mode of the tests.

Times. A ``*_max_time`` option is how long one operation takes, drawn per call (``_duration``):

* an integer N >= 1: ``1 + randrange(N)`` whole seconds (1..N), exactly the original's ``1 + rand(N)``;
* a float F: ``random() * F`` seconds (0..F). Ours, so that tests can write 0.05; the original took
  ``1 + rand(F)``, 1 to F+1 seconds;
* 0 or absent: no wait. Deliberately unlike the original, which waited 1-2 s for an explicit 0 (Ruby's
  ``rand(0)`` is a float in [0, 1)); only an absent key meant no wait there.

A wait is one ``Event.wait`` that ``stop()`` cuts short (the call then raises ``ProviderUnavailable``).
It holds one simulated connection, as the original's sleeps did, and never the inventory lock; the
failure chance of the operation is drawn after it, as in the original.

Clones. ``create_vm`` blocks for ``createvm_max_time``, so the VMActor holds its clone slot that long.
Meanwhile the VM is in the inventory (``list_vms``, ``get_vm``) with ``dummy_state`` CLONING (see
:meth:`DummyProvider.dummy_state` and the inventory file) and ``vm_ready`` answers False. A clone that
fails (``createvm_fail_percent``, drawn after the wait) or is cut short by ``stop()`` leaves no VM
behind. A finished clone is RUNNING and answers ready ``ready_delay`` seconds later.

Readiness. The original's ``vm_ready?`` waited up to ``is_ready_timeout`` (default 5 s) for a cloning VM
and raised a timeout otherwise, then slept 2 s. Ours never waits: a VM still cloning answers False, and
one that has been cloning (since its ``boottime``) for longer than ``is_ready_timeout`` raises
``ProviderTimeout``, whose message the caller records as the reason; 0 means no limit, as Ruby's
``Timeout.timeout(0)``. ``vmready_fail_percent`` applies to every check of a cloned VM (the original
stopped checking once a VM had been ready); a powered-off VM is not ready.

Failures happen when ``random() * 100 < percent`` (0 never, 100 always), drawn from one
``random.Random(seed)``. They raise (``CloneFailed`` from create, ``ProviderError`` otherwise) and
change nothing, except that a destroy failing after the shutdown leaves the VM powered off, as in the
original. Destroying a missing VM succeeds.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, cast

from vmpooler.errors import CloneFailed, ProviderError, ProviderTimeout, ProviderUnavailable, VMNotFound
from vmpooler.model import VMInfo
from vmpooler.providers.adaptive import AdaptiveTimeout, ConnectionSlots
from vmpooler.providers.base import ConnectionStats, PoolSpec, Provider, ProviderSettings, unknown_pool
from vmpooler.providers.dummy_settings import DummySettings
from vmpooler.providers.dummy_state import (
    HOSTS,
    OFF,
    ON,
    RUNNING,
    DummyVM,
    InitialVM,
    InventoryFile,
    fake_ip,
)
from vmpooler.providers.vsphere.config import POOL_KEYS as VSPHERE_POOL_KEYS

__all__ = ["DummyProvider", "DummySettings", "fake_ip"]


def _by_pool(vms: Iterable[DummyVM]) -> dict[str, dict[str, DummyVM]]:
    by_pool: dict[str, dict[str, DummyVM]] = {}
    for vm in vms:
        by_pool.setdefault(vm.pool, {})[vm.name] = vm
    return by_pool


def _permanent(message: str) -> ProviderError:
    exc = ProviderError(message)
    exc.transient = False
    return exc


class DummyProvider(Provider):
    """A fake provider with chaos knobs. Thread-safe: one lock guards the inventory."""

    config_class = DummySettings
    # The vSphere pool keys, accepted and ignored: the original's own dummy examples carry them, and a
    # vSphere pool switched to the dummy (``provider: dummy``) must start unchanged.
    pool_option_keys = VSPHERE_POOL_KEYS

    def __init__(
        self,
        name: str,
        settings: ProviderSettings,
        pools: Mapping[str, PoolSpec],
        *,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """See :meth:`Provider.__init__`.

        Args:
            clock: epoch seconds (injectable for tests).
            wait: ``wait(seconds)`` spends a simulated operation's time and returns True when ``stop()``
                cut it short. Default: a wait on the stop event. Tests inject one that moves a fake clock.
        """
        super().__init__(name, settings, pools)
        self._settings = cast(DummySettings, settings)
        self._clock = clock
        self._stopped = threading.Event()
        self._wait = wait or self._stopped.wait
        self._rng = random.Random(self._settings.seed)
        self._rng_lock = threading.Lock()
        self._lock = threading.Lock()
        self._vms = _by_pool(map(self._seed, self._settings.initial_state))
        self._connections = ConnectionSlots(
            self._settings.connection_pool_size,
            self._settings.connection_pool_timeout,
            what=f"no free connection to dummy provider {name}",
        )
        self._running = False
        path = self._settings.filename
        self._file = None if path is None else InventoryFile(path, self.log)
        self._version = 0

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

    def use_adaptive_timeout(self, adaptive: AdaptiveTimeout | None) -> None:
        """Wait for a simulated connection as long as ``adaptive`` says (see the base class)."""
        super().use_adaptive_timeout(adaptive)
        self._connections.adaptive = adaptive

    def connection_stats(self) -> ConnectionStats:
        return self._connections.stats()

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
                vm.powerstate = OFF if poweroff else vm.powerstate
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
            seconds = self._duration(self._settings.createvm_max_time)
            vm = self._add_clone(spec, name)
            try:
                if seconds > 0:
                    self._save()  # the CLONING state, as the original wrote it
                    self.log.debug("cloning %s in pool %s for %.3fs", name, pool, seconds)
                    self._pause(seconds, f"the clone of {name}")
                if self._chance(self._settings.createvm_fail_percent):
                    raise CloneFailed(f"simulated clone failure of {name} in pool {pool}")
                info = self._finish_clone(vm)
            except ProviderError:
                self._discard(vm)
                raise
        self._save()
        return info

    def vm_ready(self, pool: str, name: str) -> bool:
        self.pool_spec(pool)
        with self._connection():
            with self._lock:
                vm = self._require(pool, name)
                state, since, fqdn = vm.dummy_state, vm.boottime, f"{name}.{vm.domain}"
                powered_on, ready_at = vm.powerstate == ON, vm.ready_at
            if state != RUNNING:
                return self._still_cloning(name, since)
            if self._chance(self._settings.vmready_fail_percent):
                raise ProviderError(f"simulated: cannot connect to {fqdn}:22")
            return powered_on and self._clock() >= ready_at

    def destroy_vm(self, pool: str, name: str) -> None:
        self.pool_spec(pool)
        s = self._settings
        with self._connection():
            with self._lock:
                vm = self._vms.get(pool, {}).get(name)
                if vm is None:
                    self.log.debug("destroy %s: already gone", name)
                    return
                powered_on = vm.powerstate == ON
            if powered_on:
                self._pause(self._duration(s.destroyvm_max_shutdown_time), f"the shutdown of {name}")
                with self._lock:
                    vm.powerstate = OFF
                self._save()
            self._pause(self._duration(s.destroyvm_max_time), f"the destroy of {name}")
            if self._chance(s.destroyvm_fail_percent):
                raise ProviderError(f"simulated failure destroying {name}")
            with self._lock:
                self._vms.get(pool, {}).pop(name, None)
        self._save()

    # -- optional -----------------------------------------------------------------------------------

    def create_disk(self, pool: str, name: str, size_gb: int) -> None:
        if size_gb < 1:
            raise ValueError(f"disk size must be a positive number of GB, got {size_gb!r}")
        fail, max_time = self._settings.createdisk_fail_percent, self._settings.createdisk_max_time
        with self._simulate(pool, name, fail, max_time, "create_disk") as vm:
            vm.disks.append(size_gb)

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        def absent(vm: DummyVM) -> None:
            if snapshot in vm.snapshots:
                raise _permanent(f"{name} already has a snapshot called {snapshot!r}")

        s = self._settings
        fail, max_time = s.createsnapshot_fail_percent, s.createsnapshot_max_time
        with self._simulate(pool, name, fail, max_time, "create_snapshot", check=absent) as vm:
            vm.snapshots[snapshot] = list(vm.disks)

    def revert_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        def present(vm: DummyVM) -> None:
            if snapshot not in vm.snapshots:
                raise _permanent(f"{name} has no snapshot called {snapshot!r}")

        s = self._settings
        fail, max_time = s.revertsnapshot_fail_percent, s.revertsnapshot_max_time
        with self._simulate(pool, name, fail, max_time, "revert_snapshot", check=present) as vm:
            vm.disks = list(vm.snapshots[snapshot])
            vm.powerstate = ON

    def migrate_vm(self, pool: str, name: str) -> str | None:
        s = self._settings
        self.pool_spec(pool)
        if not self._chance(s.migratevm_couldmove_percent):
            with self._connection(), self._lock:
                self._require(pool, name)
            return None
        with self._simulate(pool, name, s.migratevm_fail_percent, s.migratevm_max_time, "migrate_vm") as vm:
            with self._rng_lock:
                vm.host = self._rng.choice([host for host in HOSTS if host != vm.host])
            target = vm.host
        return target

    def tag_vm_user(self, pool: str, name: str, user: str) -> bool:
        with self._simulate(pool, name, 0.0, 0, "tag_vm_user") as vm:
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

    def dummy_state(self, pool: str, name: str) -> str | None:
        """The VM's clone state, the original's ``dummy_state`` (``CLONING`` while ``create_vm`` runs,
        ``RUNNING`` once cloned; ``UNKNOWN`` only from ``initial_state``), or None without such a VM."""
        with self._lock:
            vm = self._vms.get(pool, {}).get(name)
            return None if vm is None else vm.dummy_state

    def remove_vm_behind_our_back(self, pool: str, name: str) -> None:
        """Make a VM vanish as if deleted outside vmpooler (for tests of the core's inventory checks)."""
        with self._lock:
            self._require(pool, name)
            del self._vms[pool][name]
        self._save()

    # -- internals ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[None]:
        """Hold one simulated backend connection for the duration of a call; wait for one at most the
        adaptive timeout (``connection_pool_timeout`` without one), else raise ``ProviderTimeout``."""
        if not self._running:
            raise ProviderUnavailable(f"dummy provider {self.name} is not running")
        with self._connections.hold():
            yield

    @contextlib.contextmanager
    def _simulate(
        self,
        pool: str,
        name: str,
        fail_percent: float,
        max_time: int | float,
        what: str,
        check: Callable[[DummyVM], None] | None = None,
    ) -> Iterator[DummyVM]:
        """One simulated operation on an existing VM: check, wait once, maybe fail, then let the
        caller change the VM under the inventory lock and persist the change."""
        self.pool_spec(pool)
        with self._connection():
            with self._lock:
                vm = self._require(pool, name)
                if check is not None:
                    check(vm)
            self._pause(self._duration(max_time), f"{what} on {name}")
            if self._chance(fail_percent):
                raise ProviderError(f"simulated {what} failure on {name}")
            with self._lock:
                vm = self._require(pool, name)
                if check is not None:
                    check(vm)
                yield vm
        self._save()

    def _add_clone(self, spec: PoolSpec, name: str) -> DummyVM:
        """Put a new VM into the inventory in state CLONING; the caller holds a connection."""
        domain = spec.domain or self._settings.domain
        vm = DummyVM.clone(name, spec.name, spec.template, domain, now=self._clock())
        with self._lock:
            if any(name in vms for vms in self._vms.values()):
                raise CloneFailed(f"a VM called {name} already exists", transient=False)
            self._vms.setdefault(spec.name, {})[name] = vm
        return vm

    def _finish_clone(self, vm: DummyVM) -> VMInfo:
        with self._lock:
            if self._vms.get(vm.pool, {}).get(vm.name) is not vm:
                raise CloneFailed(f"{vm.name} was deleted while it was being cloned")
            vm.dummy_state = RUNNING
            vm.ready_at = self._clock() + self._settings.ready_delay
            return vm.info()

    def _discard(self, vm: DummyVM) -> None:
        """Take a failed clone out of the inventory (unless something else replaced or removed it)."""
        with self._lock:
            vms = self._vms.get(vm.pool, {})
            if vms.get(vm.name) is vm:
                del vms[vm.name]
        self._save()

    def _still_cloning(self, name: str, since: float) -> bool:
        """``vm_ready`` of a VM not cloned yet: False, or ProviderTimeout after ``is_ready_timeout``."""
        limit = self._settings.is_ready_timeout
        waited = self._clock() - since
        if limit > 0 and waited > limit:
            raise ProviderTimeout(
                f"{name} is still being cloned after {waited:.1f}s (is_ready_timeout {limit}s)"
            )
        return False

    def _require(self, pool: str, name: str) -> DummyVM:
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

    def _duration(self, max_time: int | float) -> float:
        """Seconds one operation takes, from its ``*_max_time`` option: an int N >= 1 gives the
        original's ``1 + rand(N)`` whole seconds, a float F ``random() * F``, 0 nothing."""
        if max_time <= 0:
            return 0.0
        with self._rng_lock:
            if isinstance(max_time, int):
                return float(1 + self._rng.randrange(max_time))
            return max_time * self._rng.random()

    def _pause(self, seconds: float, what: str) -> None:
        if seconds > 0 and self._wait(seconds):
            raise ProviderUnavailable(f"dummy provider {self.name} stopped during {what}")

    # -- persistence --------------------------------------------------------------------------------

    def _load(self) -> None:
        """Replace the inventory with the file's, if it exists; else keep it (``initial_state`` at first)."""
        records = None if self._file is None else self._file.load(self._seed)
        if records is None:
            return
        vms = _by_pool(records)
        with self._lock:
            self._vms = vms

    def _seed(self, entry: InitialVM) -> DummyVM:
        """The record of an ``initial_state`` VM, with its pool's template and domain by default."""
        spec = self.pools.get(entry.pool)
        template = spec.template if spec else entry.pool
        domain = (spec.domain if spec else None) or self._settings.domain
        return entry.record(template=template, domain=domain, now=self._clock())

    def _save(self) -> None:
        """Persist the inventory before returning (group-committed with concurrent changes)."""
        if self._file is None:
            return
        with self._lock:
            self._version += 1
            version = self._version
        self._file.save(version, self._snapshot)

    def _snapshot(self) -> tuple[int, dict[str, Any]]:
        assert self._file is not None
        with self._lock:
            vms = (vm for pool in sorted(self._vms) for _, vm in sorted(self._vms[pool].items()))
            return self._version, self._file.snapshot(vms)
