"""DummyProvider: VMs that exist only in memory, or in an inventory file that every process naming it
shares as it would a hypervisor, for tests, development and chaos testing. It implements the whole
contract of ``vmpooler.providers.base``.

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

Sharing. With ``filename`` every call sees the VMs of every process on that file: each read reloads the
file when another process rewrote it since (a ``stat`` tells), and each change is made under an
``flock`` of the file on the newest records and written back (atomically) before the call returns, so
no process overwrites another's change, and ``stop()`` writes nothing. A clone is in the file (CLONING)
while it runs; it finds its record again by a random ``clone_id``, so a clone whose VM was destroyed
meanwhile, by any process, fails. Details in ``vmpooler.providers.dummy_state``.

Failures happen when ``random() * 100 < percent`` (0 never, 100 always), drawn from one
``random.Random(seed)``. They raise (``CloneFailed`` from create, ``ProviderError`` otherwise) and
change nothing, except that a destroy failing after the shutdown leaves the VM powered off, as in the
original. Destroying a missing VM succeeds.
"""

from __future__ import annotations

import contextlib
import functools
import random
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import TypeVar, cast

from vmpooler.errors import CloneFailed, ProviderError, ProviderTimeout, ProviderUnavailable, VMNotFound
from vmpooler.model import VMInfo
from vmpooler.providers.adaptive import AdaptiveTimeout, ConnectionSlots
from vmpooler.providers.base import ConnectionStats, PoolSpec, Provider, ProviderSettings, unknown_pool
from vmpooler.providers.dummy_inventory import Inventory, InventoryFile, Records
from vmpooler.providers.dummy_settings import DummySettings
from vmpooler.providers.dummy_state import HOSTS, OFF, ON, RUNNING, DummyVM, InitialVM, fake_ip
from vmpooler.providers.vsphere.config import POOL_KEYS as VSPHERE_POOL_KEYS

__all__ = ["DummyProvider", "DummySettings", "fake_ip"]

T = TypeVar("T")


def _permanent(message: str) -> ProviderError:
    exc = ProviderError(message)
    exc.transient = False
    return exc


# Changes and queries of the records (``Inventory.change`` and ``read``): they raise before changing.


def _find(pool: str, name: str, vms: Records) -> DummyVM | None:
    return vms.get(pool, {}).get(name)


def _info(pool: str, name: str, vms: Records) -> VMInfo | None:
    vm = _find(pool, name, vms)
    return None if vm is None else vm.info()


def _powerstate(pool: str, name: str, vms: Records) -> str | None:
    vm = _find(pool, name, vms)
    return None if vm is None else vm.powerstate


def _require(pool: str, name: str, vms: Records) -> DummyVM:
    vm = vms.get(pool, {}).get(name)
    if vm is None:
        raise VMNotFound(f"no VM called {name} in pool {pool}")
    return vm


def _check_free(name: str, vms: Records) -> None:
    if any(name in names for names in vms.values()):
        raise CloneFailed(f"a VM called {name} already exists", transient=False)


def _add(clone: DummyVM, vms: Records) -> None:
    _check_free(clone.name, vms)
    vms.setdefault(clone.pool, {})[clone.name] = clone


def _discard(clone: DummyVM, vms: Records) -> None:
    """Take a failed clone out (unless something else replaced or removed it)."""
    current = _find(clone.pool, clone.name, vms)
    if current is not None and current.clone_id == clone.clone_id:
        del vms[clone.pool][clone.name]


def _remove(pool: str, name: str, vms: Records) -> None:
    vms.get(pool, {}).pop(name, None)


def _power_off(pool: str, name: str, vms: Records) -> None:
    vm = _find(pool, name, vms)
    if vm is not None:
        vm.powerstate = OFF


class DummyProvider(Provider):
    """A fake provider with chaos knobs. Thread-safe: one lock guards the inventory (and a file lock
    the inventory file, if any, across processes)."""

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
        self._connections = ConnectionSlots(
            self._settings.connection_pool_size,
            self._settings.connection_pool_timeout,
            what=f"no free connection to dummy provider {name}",
        )
        self._running = False
        path = self._settings.filename
        file = None if path is None else InventoryFile(path, self.log, self._seed)
        self._inventory = Inventory(map(self._seed, self._settings.initial_state), file, self.log)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        self._inventory.open()
        self._stopped.clear()
        self._running = True
        count = self._inventory.read(lambda vms: sum(map(len, vms.values())))
        self.log.info("dummy provider %s started with %d VMs", self.name, count)

    def stop(self) -> None:
        """Cut waits short. Nothing to write: every change is on disk when its call returns, and a
        stale copy must not overwrite another process's changes."""
        self._running = False
        self._stopped.set()
        self._inventory.close()
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
        with self._connection():
            return self._inventory.read(
                lambda vms: [vm.info() for _, vm in sorted(vms.get(pool, {}).items())]
            )

    def get_vm(self, pool: str, name: str) -> VMInfo | None:
        self.pool_spec(pool)
        with self._connection():
            rename = self._chance(self._settings.getvm_rename_percent)
            poweroff = self._chance(self._settings.getvm_poweroff_percent)
            if not (rename or poweroff):
                return self._inventory.read(functools.partial(_info, pool, name))

            def chaos(vms: Records) -> tuple[VMInfo | None, bool]:
                vm = _find(pool, name, vms)
                if vm is None:
                    return None, False
                before = (vm.hostname, vm.powerstate)
                vm.hostname = f"DUMMY{name}" if rename else vm.hostname
                vm.powerstate = OFF if poweroff else vm.powerstate
                return vm.info(), before != (vm.hostname, vm.powerstate)

        info, changed = self._inventory.change(chaos)
        if changed and info is not None:
            self.log.info("chaos: %s is now hostname=%s powerstate=%s", name, info.hostname, info.powerstate)
        return info

    # -- actions ------------------------------------------------------------------------------------

    def create_vm(self, pool: str, name: str) -> VMInfo:
        spec = self.pools.get(pool)
        if spec is None:
            raise unknown_pool(pool, error=CloneFailed)
        domain = spec.domain or self._settings.domain
        with self._connection():
            clone = DummyVM.clone(name, pool, spec.template, domain, now=self._clock())
            seconds = self._duration(self._settings.createvm_max_time)
            if seconds > 0:
                self._clone(clone, seconds)
            failed = self._chance(self._settings.createvm_fail_percent)
        if failed:
            if seconds > 0:
                self._inventory.change(functools.partial(_discard, clone))
            else:
                self._inventory.read(functools.partial(_check_free, name))  # that error comes first
            raise CloneFailed(f"simulated clone failure of {name} in pool {pool}")
        return self._inventory.change(functools.partial(self._finish_clone, clone, seconds > 0))

    def vm_ready(self, pool: str, name: str) -> bool:
        self.pool_spec(pool)
        with self._connection():

            def readiness(vms: Records) -> tuple[str, float, str, bool, float]:
                vm = _require(pool, name, vms)
                return vm.dummy_state, vm.boottime, f"{name}.{vm.domain}", vm.powerstate == ON, vm.ready_at

            state, since, fqdn, powered_on, ready_at = self._inventory.read(readiness)
            if state != RUNNING:
                return self._still_cloning(name, since)
            if self._chance(self._settings.vmready_fail_percent):
                raise ProviderError(f"simulated: cannot connect to {fqdn}:22")
            return powered_on and self._clock() >= ready_at

    def destroy_vm(self, pool: str, name: str) -> None:
        self.pool_spec(pool)
        s = self._settings
        with self._connection():
            powerstate = self._inventory.read(functools.partial(_powerstate, pool, name))
            if powerstate is None:
                self.log.debug("destroy %s: already gone", name)
                return
            if powerstate == ON:
                self._pause(self._duration(s.destroyvm_max_shutdown_time), f"the shutdown of {name}")
                self._inventory.change(functools.partial(_power_off, pool, name))
            self._pause(self._duration(s.destroyvm_max_time), f"the destroy of {name}")
            if self._chance(s.destroyvm_fail_percent):
                raise ProviderError(f"simulated failure destroying {name}")
        self._inventory.change(functools.partial(_remove, pool, name))

    # -- optional -----------------------------------------------------------------------------------

    def create_disk(self, pool: str, name: str, size_gb: int) -> None:
        if size_gb < 1:
            raise ValueError(f"disk size must be a positive number of GB, got {size_gb!r}")
        fail, max_time = self._settings.createdisk_fail_percent, self._settings.createdisk_max_time
        self._simulate(pool, name, fail, max_time, "create_disk", lambda vm: vm.disks.append(size_gb))

    def create_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        def absent(vm: DummyVM) -> None:
            if snapshot in vm.snapshots:
                raise _permanent(f"{name} already has a snapshot called {snapshot!r}")

        def take(vm: DummyVM) -> None:
            vm.snapshots[snapshot] = list(vm.disks)

        s = self._settings
        fail, max_time = s.createsnapshot_fail_percent, s.createsnapshot_max_time
        self._simulate(pool, name, fail, max_time, "create_snapshot", take, check=absent)

    def revert_snapshot(self, pool: str, name: str, snapshot: str) -> None:
        def present(vm: DummyVM) -> None:
            if snapshot not in vm.snapshots:
                raise _permanent(f"{name} has no snapshot called {snapshot!r}")

        def revert(vm: DummyVM) -> None:
            vm.disks = list(vm.snapshots[snapshot])
            vm.powerstate = ON

        s = self._settings
        fail, max_time = s.revertsnapshot_fail_percent, s.revertsnapshot_max_time
        self._simulate(pool, name, fail, max_time, "revert_snapshot", revert, check=present)

    def migrate_vm(self, pool: str, name: str) -> str | None:
        s = self._settings
        self.pool_spec(pool)
        if not self._chance(s.migratevm_couldmove_percent):
            with self._connection():
                self._inventory.read(functools.partial(_require, pool, name))
            return None

        def move(vm: DummyVM) -> str:
            with self._rng_lock:
                vm.host = self._rng.choice([host for host in HOSTS if host != vm.host])
            return vm.host

        return self._simulate(pool, name, s.migratevm_fail_percent, s.migratevm_max_time, "migrate_vm", move)

    def tag_vm_user(self, pool: str, name: str, user: str) -> bool:
        def tag(vm: DummyVM) -> None:
            vm.user = user

        self._simulate(pool, name, 0.0, 0, "tag_vm_user", tag)
        return True

    def purge_unconfigured(self, allowlist: Collection[str]) -> list[str]:
        allowed = set(allowlist)

        def purge(vms: Records) -> list[str]:
            removed: list[str] = []
            for pool in [p for p in vms if p not in self.pools and p not in allowed]:
                for name in [n for n in vms[pool] if n not in allowed]:
                    del vms[pool][name]
                    removed.append(name)
                if not vms[pool]:
                    del vms[pool]
            return sorted(removed)

        with self._connection():
            removed = self._inventory.change(purge)
        if removed:
            self.log.info("purged %d VMs of unconfigured pools: %s", len(removed), ", ".join(removed))
        return removed

    # -- test helpers -------------------------------------------------------------------------------

    def inventory(self) -> dict[str, list[str]]:
        """Pool → sorted VM names, for every served pool and every pool that has VMs."""

        def names(vms: Records) -> dict[str, list[str]]:
            found: dict[str, list[str]] = {pool: [] for pool in self.pools}
            found.update((pool, sorted(names)) for pool, names in vms.items())
            return dict(sorted(found.items()))

        return self._inventory.read(names)

    def dummy_state(self, pool: str, name: str) -> str | None:
        """The VM's clone state, the original's ``dummy_state`` (``CLONING`` while ``create_vm`` runs,
        ``RUNNING`` once cloned; ``UNKNOWN`` only from ``initial_state``), or None without such a VM."""

        def state(vms: Records) -> str | None:
            vm = _find(pool, name, vms)
            return None if vm is None else vm.dummy_state

        return self._inventory.read(state)

    def remove_vm_behind_our_back(self, pool: str, name: str) -> None:
        """Make a VM vanish as if deleted outside vmpooler (for tests of the core's inventory checks)."""

        def remove(vms: Records) -> None:
            _require(pool, name, vms)
            del vms[pool][name]

        self._inventory.change(remove)

    # -- internals ----------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[None]:
        """Hold one simulated backend connection for the duration of a call; wait for one at most the
        adaptive timeout (``connection_pool_timeout`` without one), else raise ``ProviderTimeout``."""
        if not self._running:
            raise ProviderUnavailable(f"dummy provider {self.name} is not running")
        with self._connections.hold():
            yield

    def _simulate(
        self,
        pool: str,
        name: str,
        fail_percent: float,
        max_time: int | float,
        what: str,
        apply: Callable[[DummyVM], T],
        check: Callable[[DummyVM], None] | None = None,
    ) -> T:
        """One simulated operation on an existing VM: check, wait once, maybe fail, then ``apply`` the
        change to the newest record (checked again) and persist it; returns what ``apply`` returns."""

        def checked(vms: Records) -> DummyVM:
            vm = _require(pool, name, vms)
            if check is not None:
                check(vm)
            return vm

        self.pool_spec(pool)
        with self._connection():
            self._inventory.read(checked)
            self._pause(self._duration(max_time), f"{what} on {name}")
            if self._chance(fail_percent):
                raise ProviderError(f"simulated {what} failure on {name}")
        return self._inventory.change(lambda vms: apply(checked(vms)))

    def _clone(self, clone: DummyVM, seconds: float) -> None:
        """A clone that takes time: in the inventory as CLONING meanwhile (as the original wrote it, and
        for every process on the file); ``stop()`` cuts it short and takes it out again."""
        self._inventory.change(functools.partial(_add, clone))
        self.log.debug("cloning %s in pool %s for %.3fs", clone.name, clone.pool, seconds)
        try:
            self._pause(seconds, f"the clone of {clone.name}")
        except ProviderError:
            self._inventory.change(functools.partial(_discard, clone))
            raise

    def _finish_clone(self, clone: DummyVM, added: bool, vms: Records) -> VMInfo:
        """The clone is done: RUNNING, unless its VM was destroyed meanwhile. ``added``: it has been in
        the inventory since it started (a clone that takes time), else it is put in now."""
        if not added:
            _add(clone, vms)
        current = _find(clone.pool, clone.name, vms)
        if current is None or current.clone_id != clone.clone_id:
            raise CloneFailed(f"{clone.name} was deleted while it was being cloned")
        current.dummy_state = RUNNING
        current.ready_at = self._clock() + self._settings.ready_delay
        return current.info()

    def _still_cloning(self, name: str, since: float) -> bool:
        """``vm_ready`` of a VM not cloned yet: False, or ProviderTimeout after ``is_ready_timeout``."""
        limit = self._settings.is_ready_timeout
        waited = self._clock() - since
        if limit > 0 and waited > limit:
            raise ProviderTimeout(
                f"{name} is still being cloned after {waited:.1f}s (is_ready_timeout {limit}s)"
            )
        return False

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

    def _seed(self, entry: InitialVM) -> DummyVM:
        """The record of an ``initial_state`` VM, with its pool's template and domain by default."""
        spec = self.pools.get(entry.pool)
        template = spec.template if spec else entry.pool
        domain = (spec.domain if spec else None) or self._settings.domain
        return entry.record(template=template, domain=domain, now=self._clock())
