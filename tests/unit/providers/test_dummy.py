"""DummyProvider: the shared contract, then its chaos knobs, persistence and settings.

The registry (``vmpooler.providers``) and base-class defaults are tested at the end of this module
until they get test modules of their own.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import yaml

import vmpooler.providers as registry
from tests.conftest import wait_for
from tests.support.clock import FakeClock
from tests.support.providers import BareProvider
from vmpooler.errors import (
    CloneFailed,
    ConfigError,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    VMNotFound,
)
from vmpooler.model import VMInfo
from vmpooler.providers import load_provider_class
from vmpooler.providers.base import PoolSpec, Provider, ProviderSettings
from vmpooler.providers.dummy import DummyProvider, DummySettings, fake_ip

from .contract import ProviderContract

POOLS = {
    "pool1": PoolSpec(name="pool1", template="templates/one", size=2),
    "pool2": PoolSpec(name="pool2", template="templates/two", size=1, domain="example.com"),
    ProviderContract.pool: PoolSpec(name=ProviderContract.pool, template="templates/contract"),
}


class Gate:
    """A provider ``wait`` that blocks until the test opens it, so the test can look at a call in progress."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.entered.set()
        assert self.opened.wait(5), "the test never opened the gate"
        return False

    def wait_entered(self) -> None:
        assert self.entered.wait(5), "the call never started its wait"


def in_thread(call: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run ``call`` in a thread; the list receives its result or the exception it raised."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


Make = Callable[..., DummyProvider]


@pytest.fixture
def make() -> Iterator[Make]:
    """Build and start DummyProviders from options; every one is stopped in teardown."""
    made: list[DummyProvider] = []

    def build(
        pools: dict[str, PoolSpec] | None = None,
        clock: Callable[[], float] = time.time,
        wait: Callable[[float], bool] | None = None,
        **options: Any,
    ) -> DummyProvider:
        settings = DummySettings.from_options(options, instance="dummy1")
        provider = DummyProvider(
            "dummy1", settings, POOLS if pools is None else pools, clock=clock, wait=wait
        )
        provider.start()
        made.append(provider)
        return provider

    yield build
    for provider in made:
        provider.stop()


def disks(path: Path, name: str) -> list[int]:
    """The disks of VM ``name`` as persisted in the inventory file."""
    data = yaml.safe_load(path.read_text())
    return next(vm["disks"] for vm in data["vms"] if vm["name"] == name)


class TestDummyContract(ProviderContract):
    @pytest.fixture
    def provider(self, make: Make) -> DummyProvider:
        return make()


# -- chaos ------------------------------------------------------------------------------------------


def _clone_outcomes(make: Make, seed: int) -> list[bool]:
    provider = make(seed=seed, createvm_fail_percent=50, getvm_rename_percent=30)
    outcomes = []
    for n in range(40):
        try:
            provider.create_vm("pool1", f"vm{n}")
            outcomes.append(provider.get_vm("pool1", f"vm{n}") is not None)
        except CloneFailed:
            outcomes.append(False)
    return outcomes


def test_seeded_chaos_is_reproducible(make: Make) -> None:
    first, second = _clone_outcomes(make, seed=7), _clone_outcomes(make, seed=7)
    assert first == second
    assert True in first and False in first


def test_a_failed_clone_leaves_no_vm_behind(make: Make) -> None:
    provider = make(createvm_fail_percent=100)
    with pytest.raises(CloneFailed) as caught:
        provider.create_vm("pool1", "vm1")
    assert caught.value.transient is True
    assert provider.inventory()["pool1"] == []
    assert provider.get_vm("pool1", "vm1") is None


@pytest.mark.parametrize(
    ("option", "call"),
    [
        ("vmready_fail_percent", lambda p: p.vm_ready("pool1", "vm1")),
        ("createdisk_fail_percent", lambda p: p.create_disk("pool1", "vm1", 5)),
        ("createsnapshot_fail_percent", lambda p: p.create_snapshot("pool1", "vm1", "s1")),
        ("revertsnapshot_fail_percent", lambda p: p.revert_snapshot("pool1", "vm1", "s0")),
    ],
)
def test_a_100_percent_failure_always_fails_and_changes_nothing(
    make: Make, tmp_path: Path, option: str, call: Callable[[DummyProvider], object]
) -> None:
    path = tmp_path / "inventory.yaml"
    setup = make(filename=str(path))
    setup.create_vm("pool1", "vm1")
    setup.create_snapshot("pool1", "vm1", "s0")
    setup.stop()
    provider = make(filename=str(path), **{option: 100})
    before = path.read_text()
    for _ in range(5):
        with pytest.raises(ProviderError):
            call(provider)
    assert path.read_text() == before
    assert provider.inventory()["pool1"] == ["vm1"]


def test_a_100_percent_migration_failure_keeps_the_host(make: Make) -> None:
    provider = make(migratevm_couldmove_percent=100, migratevm_fail_percent=100)
    before = provider.create_vm("pool1", "vm1")
    with pytest.raises(ProviderError):
        provider.migrate_vm("pool1", "vm1")
    assert provider.get_vm("pool1", "vm1") == before
    assert before.host == "HOST1"


def test_zero_percent_never_fails(make: Make) -> None:
    knobs = [
        "createvm",
        "destroyvm",
        "vmready",
        "createdisk",
        "createsnapshot",
        "revertsnapshot",
        "migratevm",
    ]
    provider = make(seed=1, **{f"{knob}_fail_percent": 0 for knob in knobs})
    for n in range(30):
        name = f"vm{n}"
        provider.create_vm("pool1", name)
        assert provider.vm_ready("pool1", name)
        provider.create_disk("pool1", name, 1)
        provider.create_snapshot("pool1", name, "s")
        provider.revert_snapshot("pool1", name, "s")
        assert provider.migrate_vm("pool1", name) is None
        provider.destroy_vm("pool1", name)
    assert provider.inventory()["pool1"] == []


def test_rename_chaos_changes_the_reported_hostname(make: Make) -> None:
    provider = make(getvm_rename_percent=100)
    provider.create_vm("pool1", "vm1")
    info = provider.get_vm("pool1", "vm1")
    assert info is not None and info.hostname == "DUMMYvm1"
    assert [vm.hostname for vm in provider.list_vms("pool1")] == ["DUMMYvm1"]  # stored, as a guest would


def test_poweroff_chaos_powers_the_vm_off_and_it_is_not_ready(make: Make) -> None:
    provider = make(getvm_poweroff_percent=100)
    provider.create_vm("pool1", "vm1")
    assert provider.vm_ready("pool1", "vm1") is True
    info = provider.get_vm("pool1", "vm1")
    assert info is not None and info.powerstate == "PoweredOff"
    assert provider.vm_ready("pool1", "vm1") is False


# -- simulated time: the *_max_time options ---------------------------------------------------------


MAX_TIME_CALLS: dict[str, Callable[[DummyProvider], object]] = {
    # each *_max_time option and a call that spends its time, on a powered-on vm1 with a snapshot s0
    "createvm_max_time": lambda p: p.create_vm("pool1", "vm2"),
    "destroyvm_max_shutdown_time": lambda p: p.destroy_vm("pool1", "vm1"),
    "destroyvm_max_time": lambda p: p.destroy_vm("pool1", "vm1"),
    "createdisk_max_time": lambda p: p.create_disk("pool1", "vm1", 5),
    "createsnapshot_max_time": lambda p: p.create_snapshot("pool1", "vm1", "s1"),
    "revertsnapshot_max_time": lambda p: p.revert_snapshot("pool1", "vm1", "s0"),
    "migratevm_max_time": lambda p: p.migrate_vm("pool1", "vm1"),
}


@pytest.mark.parametrize("option", MAX_TIME_CALLS)
@pytest.mark.parametrize("value", [3, 0.5, 0, 0.0, None])
def test_every_max_time_follows_the_same_rule(make: Make, option: str, value: float | None) -> None:
    clock = FakeClock()
    options: dict[str, Any] = {"migratevm_couldmove_percent": 100} if option == "migratevm_max_time" else {}
    provider = make(clock=clock, wait=clock.wait, seed=1, **options, **{option: value})
    if option != "createvm_max_time":
        provider.create_vm("pool1", "vm1")
        provider.create_snapshot("pool1", "vm1", "s0")
    clock.waits.clear()
    MAX_TIME_CALLS[option](provider)
    if not value:
        assert clock.waits == []  # 0 or null: no wait at all
    elif isinstance(value, int):
        [waited] = clock.waits
        assert waited in (1.0, 2.0, 3.0)  # whole seconds, 1..N
    else:
        [waited] = clock.waits
        assert 0 <= waited < value


def test_an_integer_max_time_is_exactly_the_originals_1_plus_rand_n(make: Make) -> None:
    clock = FakeClock()
    provider = make(clock=clock, wait=clock.wait, seed=11, createvm_max_time=4)
    for n in range(200):
        provider.create_vm("pool1", f"vm{n}")
    rng = random.Random(11)
    assert clock.waits == [1 + rng.randrange(4) for _ in range(200)]
    assert set(clock.waits) == {1, 2, 3, 4} and all(isinstance(w, float) for w in clock.waits)


def test_a_float_max_time_is_a_fraction_of_it(make: Make) -> None:
    clock = FakeClock()
    provider = make(clock=clock, wait=clock.wait, seed=11, createvm_max_time=0.05)
    for n in range(50):
        provider.create_vm("pool1", f"vm{n}")
    rng = random.Random(11)
    assert clock.waits == [0.05 * rng.random() for _ in range(50)]
    assert max(clock.waits) < 0.05


def test_create_vm_blocks_for_its_time_on_the_real_clock(make: Make) -> None:
    provider = make(seed=3, createvm_max_time=0.4)  # seed 3 draws 0.4 * 0.238 = 0.095 s
    started = time.monotonic()
    info = provider.create_vm("pool1", "vm1")
    assert 0.095 <= time.monotonic() - started < 5
    assert info.ip == fake_ip("vm1") and info.powerstate == "PoweredOn"
    assert provider.vm_ready("pool1", "vm1") is True


def test_a_cloning_vm_is_in_the_inventory_and_not_ready(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    gate = Gate()
    provider = make(wait=gate, createvm_max_time=3, connection_pool_size=2, filename=str(path))
    thread, outcome = in_thread(lambda: provider.create_vm("pool1", "vm1"))
    gate.wait_entered()
    assert [vm.name for vm in provider.list_vms("pool1")] == ["vm1"]
    assert provider.get_vm("pool1", "vm1") is not None
    assert provider.dummy_state("pool1", "vm1") == "CLONING"
    assert yaml.safe_load(path.read_text())["vms"][0]["dummy_state"] == "CLONING"
    assert provider.vm_ready("pool1", "vm1") is False
    gate.opened.set()
    thread.join(timeout=5)
    [info] = outcome
    assert isinstance(info, VMInfo) and info.name == "vm1"
    assert provider.dummy_state("pool1", "vm1") == "RUNNING"
    assert yaml.safe_load(path.read_text())["vms"][0]["dummy_state"] == "RUNNING"
    assert provider.vm_ready("pool1", "vm1") is True


def test_a_clone_holds_its_connection_while_it_waits(make: Make) -> None:
    gate = Gate()
    provider = make(wait=gate, createvm_max_time=3, connection_pool_timeout=0.05)  # one connection
    thread, _ = in_thread(lambda: provider.create_vm("pool1", "vm1"))
    gate.wait_entered()
    with pytest.raises(ProviderTimeout, match="no free connection"):
        provider.list_vms("pool1")
    gate.opened.set()
    thread.join(timeout=5)
    assert provider.list_vms("pool1")[0].name == "vm1"


def test_vm_ready_of_a_cloning_vm_times_out_after_is_ready_timeout(make: Make) -> None:
    clock, gate = FakeClock(), Gate()
    provider = make(clock=clock, wait=gate, createvm_max_time=60, connection_pool_size=2, is_ready_timeout=2)
    thread, _ = in_thread(lambda: provider.create_vm("pool1", "vm1"))
    gate.wait_entered()
    clock.now += 2
    assert provider.vm_ready("pool1", "vm1") is False
    clock.now += 0.5
    with pytest.raises(ProviderTimeout, match="is_ready_timeout 2s"):
        provider.vm_ready("pool1", "vm1")
    gate.opened.set()
    thread.join(timeout=5)
    assert provider.vm_ready("pool1", "vm1") is True


def test_stop_interrupts_a_blocking_create_vm_and_leaves_no_vm(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    provider = make(createvm_max_time=30, filename=str(path))  # 1..30 real seconds
    thread, outcome = in_thread(lambda: provider.create_vm("pool1", "vm1"))
    wait_for(lambda: provider.dummy_state("pool1", "vm1") == "CLONING", 5, "the clone to start")
    provider.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()
    [error] = outcome
    assert isinstance(error, ProviderUnavailable)
    assert provider.inventory()["pool1"] == []
    assert yaml.safe_load(path.read_text())["vms"] == []


def test_a_clone_fails_after_its_wait_and_leaves_nothing(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    clock = FakeClock()
    provider = make(
        clock=clock, wait=clock.wait, createvm_max_time=3, createvm_fail_percent=100, filename=str(path)
    )
    with pytest.raises(CloneFailed):
        provider.create_vm("pool1", "vm1")
    assert len(clock.waits) == 1  # the failure is decided after the clone's time, as in the original
    assert provider.inventory()["pool1"] == []
    assert provider.dummy_state("pool1", "vm1") is None
    assert yaml.safe_load(path.read_text())["vms"] == []


def test_destroy_waits_for_the_shutdown_only_when_powered_on(make: Make) -> None:
    clock = FakeClock()
    initial = {"pool1": ["on", {"name": "off", "powerstate": "PoweredOff"}]}
    provider = make(
        clock=clock,
        wait=clock.wait,
        initial_state=initial,
        destroyvm_max_shutdown_time=0.5,
        destroyvm_max_time=3,
    )
    provider.destroy_vm("pool1", "on")
    shutdown, destroy = clock.waits
    assert shutdown < 0.5 and destroy in (1, 2, 3)
    clock.waits.clear()
    provider.destroy_vm("pool1", "off")
    [destroy] = clock.waits
    assert destroy in (1, 2, 3)
    assert provider.inventory()["pool1"] == []


def test_a_failed_destroy_leaves_the_vm_powered_off(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    provider = make(destroyvm_fail_percent=100, filename=str(path))
    provider.create_vm("pool1", "vm1")
    with pytest.raises(ProviderError, match="simulated failure destroying vm1"):
        provider.destroy_vm("pool1", "vm1")
    assert [vm.powerstate for vm in provider.list_vms("pool1")] == ["PoweredOff"]
    assert yaml.safe_load(path.read_text())["vms"][0]["powerstate"] == "PoweredOff"


def test_migration_unset_never_moves_waits_or_fails(make: Make) -> None:
    clock = FakeClock()
    provider = make(clock=clock, wait=clock.wait, migratevm_max_time=3, migratevm_fail_percent=100)
    provider.create_vm("pool1", "vm1")
    assert provider.migrate_vm("pool1", "vm1") is None
    assert clock.waits == []


# -- readiness --------------------------------------------------------------------------------------


def test_ready_delay_is_respected(make: Make) -> None:
    clock = FakeClock()
    provider = make(clock=clock, ready_delay=30)
    provider.create_vm("pool1", "vm1")
    assert provider.vm_ready("pool1", "vm1") is False
    clock.now += 29.9
    assert provider.vm_ready("pool1", "vm1") is False
    clock.now += 0.1
    assert provider.vm_ready("pool1", "vm1") is True


def test_ready_delay_on_the_real_clock(make: Make) -> None:
    provider = make(ready_delay=0.05)
    provider.create_vm("pool1", "vm1")
    assert provider.vm_ready("pool1", "vm1") is False
    time.sleep(0.06)
    assert provider.vm_ready("pool1", "vm1") is True


def test_vm_ready_of_a_vm_cloning_too_long_raises_after_is_ready_timeout(make: Make) -> None:
    clock = FakeClock()
    initial = {
        "pool1": [{"name": "vm1", "dummy_state": "UNKNOWN"}, {"name": "vm2", "dummy_state": "CLONING"}]
    }
    provider = make(clock=clock, initial_state=initial)  # is_ready_timeout: 5 by default
    clock.now += 5
    assert provider.vm_ready("pool1", "vm1") is False
    assert provider.vm_ready("pool1", "vm2") is False
    clock.now += 0.01
    for name in ("vm1", "vm2"):
        with pytest.raises(
            ProviderTimeout, match=rf"{name} is still being cloned after 5\.0s.*is_ready_timeout 5s"
        ):
            provider.vm_ready("pool1", name)


@pytest.mark.parametrize(("timeout", "raises_after"), [(1, 1.5), (0.25, 0.5), (0, None)])
def test_is_ready_timeout_sets_the_limit_and_0_means_none(
    make: Make, timeout: float, raises_after: float | None
) -> None:
    clock = FakeClock()
    provider = make(
        clock=clock,
        is_ready_timeout=timeout,
        initial_state={"pool1": [{"name": "vm1", "dummy_state": "UNKNOWN"}]},
    )
    clock.now += timeout
    assert provider.vm_ready("pool1", "vm1") is False
    if raises_after is None:
        clock.now += 1_000_000
        assert provider.vm_ready("pool1", "vm1") is False
    else:
        clock.now += raises_after - timeout
        with pytest.raises(ProviderTimeout):
            provider.vm_ready("pool1", "vm1")


def test_fake_ip_is_stable_and_private() -> None:
    assert fake_ip("vm1") == fake_ip("vm1") != fake_ip("vm2")
    assert re.fullmatch(r"10\.\d{1,3}\.\d{1,3}\.\d{1,3}", fake_ip("vm1"))
    assert all(0 < int(part) < 255 for part in fake_ip("vm1").split(".")[3:])


def test_vm_ready_failure_names_the_fqdn_from_the_pool_domain(make: Make) -> None:
    provider = make(vmready_fail_percent=100)
    provider.create_vm("pool1", "vm1")
    provider.create_vm("pool2", "vm2")
    with pytest.raises(ProviderError, match=r"vm1\.dummy\.local:22"):  # pool1 has no domain
        provider.vm_ready("pool1", "vm1")
    with pytest.raises(ProviderError, match=r"vm2\.example\.com:22"):
        provider.vm_ready("pool2", "vm2")


# -- destroy, disks, snapshots, migration, tags -----------------------------------------------------


def test_destroy_sleeps_once_for_at_most_its_max_times(make: Make) -> None:
    provider = make(seed=5, destroyvm_max_shutdown_time=0.05, destroyvm_max_time=0.05)
    provider.create_vm("pool1", "vm1")
    started = time.monotonic()
    provider.destroy_vm("pool1", "vm1")
    assert time.monotonic() - started < 0.1 + 0.05
    assert provider.inventory()["pool1"] == []


def test_destroy_in_one_pool_leaves_a_same_named_vm_elsewhere(make: Make) -> None:
    provider = make()
    provider.create_vm("pool1", "vm1")
    provider.destroy_vm("pool2", "vm1")
    assert provider.inventory()["pool1"] == ["vm1"]


def test_disks_snapshots_and_revert(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    provider = make(filename=str(path), getvm_poweroff_percent=100)
    provider.create_vm("pool1", "vm1")
    provider.create_disk("pool1", "vm1", 10)
    provider.create_snapshot("pool1", "vm1", "s1")
    provider.create_disk("pool1", "vm1", 20)
    assert disks(path, "vm1") == [10, 20]
    with pytest.raises(ProviderError) as caught:
        provider.create_snapshot("pool1", "vm1", "s1")
    assert caught.value.transient is False
    provider.get_vm("pool1", "vm1")  # powers it off (chaos)
    provider.revert_snapshot("pool1", "vm1", "s1")
    assert disks(path, "vm1") == [10]
    assert provider.list_vms("pool1")[0].powerstate == "PoweredOn"
    with pytest.raises(ProviderError) as caught:
        provider.revert_snapshot("pool1", "vm1", "nope")
    assert caught.value.transient is False


@pytest.mark.parametrize("size", [0, -5])
def test_create_disk_refuses_a_non_positive_size(make: Make, size: int) -> None:
    provider = make()
    provider.create_vm("pool1", "vm1")
    with pytest.raises(ValueError, match="positive"):
        provider.create_disk("pool1", "vm1", size)


def test_migration_moves_to_another_host_when_chaos_says_so(make: Make) -> None:
    provider = make(seed=2, migratevm_couldmove_percent=100)
    provider.create_vm("pool1", "vm1")
    host = provider.migrate_vm("pool1", "vm1")
    assert host is not None and host != "HOST1" and re.fullmatch(r"HOST\d+", host)
    info = provider.get_vm("pool1", "vm1")
    assert info is not None and info.host == host
    with pytest.raises(VMNotFound):
        provider.migrate_vm("pool1", "missing")


def test_migration_stays_put_by_default(make: Make) -> None:
    provider = make()
    provider.create_vm("pool1", "vm1")
    assert provider.migrate_vm("pool1", "vm1") is None
    with pytest.raises(VMNotFound):
        provider.migrate_vm("pool1", "missing")


def test_tag_vm_user_is_stored(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    provider = make(filename=str(path))
    provider.create_vm("pool1", "vm1")
    assert provider.tag_vm_user("pool1", "vm1", "alice") is True
    assert yaml.safe_load(path.read_text())["vms"][0]["user"] == "alice"


def test_remove_vm_behind_our_back(make: Make) -> None:
    provider = make()
    provider.create_vm("pool1", "vm1")
    provider.create_vm("pool1", "vm2")
    provider.remove_vm_behind_our_back("pool1", "vm1")
    assert provider.inventory()["pool1"] == ["vm2"]
    assert provider.get_vm("pool1", "vm1") is None
    with pytest.raises(VMNotFound):
        provider.vm_ready("pool1", "vm1")
    provider.destroy_vm("pool1", "vm1")
    with pytest.raises(VMNotFound):
        provider.remove_vm_behind_our_back("pool1", "vm1")


def test_inventory_lists_every_served_pool(make: Make) -> None:
    provider = make()
    provider.create_vm("pool2", "b")
    provider.create_vm("pool2", "a")
    assert provider.inventory() == {"contract-pool": [], "pool1": [], "pool2": ["a", "b"]}


# -- persistence ------------------------------------------------------------------------------------


def test_a_new_process_finds_the_vms_in_the_file(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    first = make(filename=str(path))
    created = first.create_vm("pool1", "vm1")
    first.create_vm("pool2", "vm2")
    first.create_snapshot("pool1", "vm1", "s1")
    first.create_vm("pool1", "gone")
    first.destroy_vm("pool1", "gone")
    # no stop(): a crashed process leaves a complete file too
    second = make(filename=str(path))
    assert second.inventory() == {"contract-pool": [], "pool1": ["vm1"], "pool2": ["vm2"]}
    assert second.get_vm("pool1", "vm1") == created
    second.revert_snapshot("pool1", "vm1", "s1")
    assert [p.name for p in tmp_path.iterdir()] == ["inventory.yaml"]  # no temp files left


def test_a_missing_file_starts_empty(make: Make, tmp_path: Path) -> None:
    provider = make(filename=str(tmp_path / "new.yaml"))
    assert provider.list_vms("pool1") == []


@pytest.mark.parametrize("content", ["{{{ not yaml", "vms: [1, 2]", "vms: [{name: x}]", "- a list"])
def test_a_corrupt_file_fails_start(tmp_path: Path, content: str) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text(content)
    settings = DummySettings.from_options({"filename": str(path)})
    provider = DummyProvider("dummy1", settings, POOLS)
    with pytest.raises(ProviderError, match="cannot load dummy inventory") as caught:
        provider.start()
    assert caught.value.transient is False
    provider.stop()
    assert path.read_text() == content  # the broken file is left for a human to look at


def test_a_write_error_is_logged_and_the_vm_kept(
    make: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = make(filename=str(tmp_path / "no-such-dir" / "inventory.yaml"))
    provider.create_vm("pool1", "vm1")
    assert provider.inventory()["pool1"] == ["vm1"]
    assert "cannot write dummy inventory" in caplog.text


def test_purge_unconfigured_removes_vms_of_pools_no_longer_served(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    old = make(filename=str(path))
    for pool, name in [("pool1", "keep"), ("pool2", "drop"), ("pool2", "allowed")]:
        old.create_vm(pool, name)
    old.stop()
    new = make(pools={"pool1": POOLS["pool1"]}, filename=str(path))
    assert new.purge_unconfigured(["allowed"]) == ["drop"]
    assert new.inventory() == {"pool1": ["keep"], "pool2": ["allowed"]}
    assert new.purge_unconfigured(["pool2"]) == []


# -- lifecycle and connections ----------------------------------------------------------------------


def test_calls_before_start_and_after_stop_are_unavailable(make: Make) -> None:
    provider = DummyProvider("dummy1", DummySettings(), POOLS)
    with pytest.raises(ProviderUnavailable):
        provider.list_vms("pool1")
    provider = make()
    provider.stop()
    with pytest.raises(ProviderUnavailable):
        provider.create_vm("pool1", "vm1")


def test_stop_cuts_a_simulated_wait_short(make: Make) -> None:
    provider = make(seed=0, destroyvm_max_time=30)  # seed 0 draws 28 s
    provider.create_vm("pool1", "vm1")
    errors: list[BaseException] = []

    def destroy() -> None:
        try:
            provider.destroy_vm("pool1", "vm1")
        except ProviderError as exc:
            errors.append(exc)

    thread = threading.Thread(target=destroy)
    thread.start()
    provider.stop()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ProviderUnavailable)
    assert provider.inventory()["pool1"] == ["vm1"]


def test_an_exhausted_connection_pool_times_out(make: Make) -> None:
    provider = make(connection_pool_size=1, connection_pool_timeout=0.05)
    with provider._connection(), pytest.raises(ProviderTimeout):
        provider.list_vms("pool1")
    assert provider.list_vms("pool1") == []


# -- settings ---------------------------------------------------------------------------------------


def test_settings_defaults() -> None:
    settings = DummySettings.from_options({})
    assert settings.filename is None and settings.seed is None
    assert settings.connection_pool_size == 1 and settings.connection_pool_timeout == 10.0
    assert settings.createvm_max_time == 0 and settings.ready_delay == 0.0
    assert settings.is_ready_timeout == 5 and settings.initial_state == ()
    assert settings.migratevm_couldmove_percent == 0.0
    assert settings.domain == "dummy.local"


def test_settings_convert_ints_and_skip_core_keys() -> None:
    settings = DummySettings.from_options(
        {"provider_class": "dummy", "resources_allowlist": ["x"], ":createvm_max_time": 2, "seed": 4}
    )
    assert settings.createvm_max_time == 2 and isinstance(settings.createvm_max_time, int)
    assert settings.seed == 4


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("createvm_fail_percent", 100.5, "from 0 to 100"),
        ("vmready_fail_percent", -1, "from 0 to 100"),
        ("destroyvm_max_time", -0.5, ">= 0"),
        ("ready_delay", "1", "must be a number"),
        ("getvm_rename_percent", True, "must be a number"),
        ("seed", "abc", "must be an integer"),
        ("seed", 1.5, "must be an integer"),
        ("connection_pool_size", 0, ">= 1"),
        ("filename", 5, "must be a string"),
    ],
)
def test_settings_errors_name_the_key(key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DummySettings.from_options({key: value}, instance="chaos")
    [problem] = caught.value.problems
    assert problem.startswith(f":providers:.chaos.{key}: ")
    assert reason in problem


def test_settings_report_every_problem_at_once_and_warn_about_unknown_keys() -> None:
    warnings: list[str] = []
    with pytest.raises(ConfigError) as caught:
        DummySettings.from_options(
            {"createvm_fail_percent": 101, "seed": "x", "sise": 1}, instance="d", warnings=warnings
        )
    assert len(caught.value.problems) == 2
    assert warnings == []  # nothing is reported as a warning when the section fails
    DummySettings.from_options({"seed": 1, "cretevm_max_time": 1}, instance="d", warnings=warnings)
    assert warnings == [
        ":providers:.d.cretevm_max_time: unknown key, ignored (did you mean 'createvm_max_time'?)"
    ]


ORIGINAL_KEYS = {  # every option the original dummy provider reads
    "filename",
    "initial_state",
    "connection_pool_size",
    "connection_pool_timeout",
    "migratevm_couldmove_percent",
    "migratevm_max_time",
    "migratevm_fail_percent",
    "getvm_poweroff_percent",
    "getvm_rename_percent",
    "createvm_max_time",
    "createvm_fail_percent",
    "createdisk_max_time",
    "createdisk_fail_percent",
    "createsnapshot_max_time",
    "createsnapshot_fail_percent",
    "revertsnapshot_max_time",
    "revertsnapshot_fail_percent",
    "destroyvm_max_shutdown_time",
    "destroyvm_max_time",
    "destroyvm_fail_percent",
    "vmready_fail_percent",
    "is_ready_timeout",
}


def test_every_key_the_original_reads_is_a_setting() -> None:
    missing = ORIGINAL_KEYS - {field.name for field in attrs.fields(DummySettings)}
    assert missing == set()


def test_times_keep_their_int_or_float_type() -> None:
    settings = DummySettings.from_options(
        {"createvm_max_time": 5, "destroyvm_max_time": 5.0, "is_ready_timeout": 0.5}
    )
    assert settings.createvm_max_time == 5 and type(settings.createvm_max_time) is int
    assert settings.destroyvm_max_time == 5.0 and type(settings.destroyvm_max_time) is float
    assert settings.is_ready_timeout == 0.5


def test_null_values_mean_the_originals_defaults() -> None:
    settings = DummySettings.from_options(dict.fromkeys(ORIGINAL_KEYS))
    assert settings == DummySettings()
    assert settings.connection_pool_size == 1 and settings.connection_pool_timeout == 10.0
    assert settings.is_ready_timeout == 5


# -- initial_state ----------------------------------------------------------------------------------


def test_initial_state_in_the_originals_spec_shape(make: Make) -> None:
    vm = {
        "name": "vm1",
        "hostname": "vm1",
        "domain": "dummy.local",
        "vm_template": "template1",
        "template": "pool1",
        "poolname": "pool1",
        "ready": False,
        "boottime": datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC),
        "powerstate": "PoweredOn",
        "vm_host": "HOST3",
        "snapshots": ["s1"],
        "disks": [10],
        "dummy_state": "RUNNING",
    }
    provider = make(initial_state={"pool": {"pool1": [vm], "pool2": ["vm2"]}})
    assert provider.inventory() == {"contract-pool": [], "pool1": ["vm1"], "pool2": ["vm2"]}
    info = provider.get_vm("pool1", "vm1")
    assert info == VMInfo(
        name="vm1",
        pool="pool1",
        hostname="vm1",
        template="template1",
        powerstate="PoweredOn",
        ip=fake_ip("vm1"),
        host="HOST3",
        boottime=datetime.datetime(2026, 11, 21, 10, 0, tzinfo=datetime.UTC).timestamp(),
    )
    assert provider.vm_ready("pool1", "vm1") is True
    provider.revert_snapshot("pool1", "vm1", "s1")
    two = provider.get_vm("pool2", "vm2")
    assert two is not None and two.template == "templates/two" and two.host == "HOST1"
    assert provider.vm_ready("pool2", "vm2") is True


def test_initial_state_ready_true_means_cloned(make: Make) -> None:
    provider = make(initial_state={"pool1": [{"name": "vm1", "dummy_state": "UNKNOWN", "ready": True}]})
    assert provider.dummy_state("pool1", "vm1") == "RUNNING"


def test_an_inventory_file_wins_over_initial_state(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    make(filename=str(path)).create_vm("pool1", "from-file")
    provider = make(filename=str(path), initial_state={"pool1": ["from-option"]})
    assert provider.inventory()["pool1"] == ["from-file"]
    no_file_yet = make(filename=str(tmp_path / "new.yaml"), initial_state={"pool1": ["from-option"]})
    assert no_file_yet.inventory()["pool1"] == ["from-option"]


def test_the_original_dummys_inventory_file_is_read(make: Make, tmp_path: Path) -> None:
    path = tmp_path / "dummy.yaml"
    path.write_text(
        "---\npool:\n  pool1:\n  - name: vm1\n    hostname: vm1\n    domain: dummy.local\n"
        "    vm_template: templates/one\n    template: pool1\n    poolname: pool1\n    ready: true\n"
        "    boottime: 2026-11-21 10:00:00.123456789 +00:00\n    powerstate: PoweredOn\n"
        "    vm_host: HOST1\n    dummy_state: RUNNING\n    snapshots: []\n    disks: []\n"
    )
    provider = make(filename=str(path))
    assert provider.inventory()["pool1"] == ["vm1"]
    assert provider.vm_ready("pool1", "vm1") is True
    provider.create_vm("pool1", "vm2")
    assert [vm["name"] for vm in yaml.safe_load(path.read_text())["vms"]] == [
        "vm1",
        "vm2",
    ]  # ours from now on


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (["vm1"], "must be a mapping"),
        ({"pool1": "vm1"}, "pool1: must be a list"),
        ({"pool1": [5]}, "pool1[0]: must be a VM name or a mapping"),
        ({"pool1": [{"hostname": "x"}]}, "pool1[0]: name is required"),
        ({"pool1": [{"name": "x", "colour": "red"}]}, "pool1[0]: unknown VM keys colour"),
        ({"pool1": [{"name": "x", "dummy_state": "BOOTING"}]}, "pool1[0].dummy_state: must be one of"),
        ({"pool1": [{"name": "x", "disks": ["big"]}]}, "pool1[0].disks: must be a list of int"),
        ({"pool1": [{"name": "x", "boottime": "yesterday"}]}, "pool1[0].boottime: must be epoch seconds"),
        ({"pool1": ["x"], "pool2": ["x"]}, "repeated: x"),
    ],
)
def test_initial_state_errors_name_the_place(value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DummySettings.from_options({"initial_state": value}, instance="d")
    [problem] = caught.value.problems
    assert problem.startswith(":providers:.d.initial_state: ") and reason in problem


# -- registry and base defaults (until they have test modules of their own) ------------------------


@pytest.mark.parametrize("name", ["dummy", "Dummy", "DUMMY"])
def test_registry_loads_builtin_names_case_insensitively(name: str) -> None:
    assert load_provider_class(name) is DummyProvider


def test_registry_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nope': unknown provider \(known: dummy, vsphere\)"):
        load_provider_class("nope")


def test_registry_vsphere_loads_or_fails_as_config_error() -> None:
    try:
        cls = load_provider_class("vsphere")
    except ConfigError as exc:
        assert "vsphere" in str(exc)
    else:
        assert issubclass(cls, Provider)


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("vmpooler.providers.no_such_module:X", "ModuleNotFoundError"),
        ("vmpooler.providers.dummy:NoSuchClass", "AttributeError"),
        ("vmpooler.model:VMInfo", "not a Provider subclass"),
    ],
)
def test_registry_import_errors_are_config_errors(
    monkeypatch: pytest.MonkeyPatch, target: str, error: str
) -> None:
    monkeypatch.setitem(registry.BUILTIN, "broken", target)
    with pytest.raises(ConfigError, match=error) as caught:
        load_provider_class("Broken")
    assert "'Broken'" in str(caught.value)


def test_registry_finds_entry_points_but_builtins_win(monkeypatch: pytest.MonkeyPatch) -> None:
    group = registry.ENTRY_POINT_GROUP
    entries = [
        importlib.metadata.EntryPoint("MyCloud", "vmpooler.providers.dummy:DummyProvider", group),
        importlib.metadata.EntryPoint("dummy", "vmpooler.model:VMInfo", group),
    ]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: entries)
    assert load_provider_class("mycloud") is DummyProvider
    assert load_provider_class("dummy") is DummyProvider


_Bare = BareProvider


def test_base_optional_defaults() -> None:
    bare = _Bare("bare", ProviderSettings(), POOLS)
    for call in (
        lambda: bare.create_disk("pool1", "vm", 1),
        lambda: bare.create_snapshot("pool1", "vm", "s"),
        lambda: bare.revert_snapshot("pool1", "vm", "s"),
        lambda: bare.purge_unconfigured([]),
    ):
        with pytest.raises(NotImplementedError):
            call()
    assert bare.migrate_vm("pool1", "vm") is None
    assert bare.tag_vm_user("pool1", "vm", "alice") is True
    bare.prepare_template("pool1")  # a no-op


def test_base_checks_settings_type_and_freezes_pools() -> None:
    with pytest.raises(TypeError):
        DummyProvider("d", ProviderSettings(), POOLS)
    bare = _Bare("bare", ProviderSettings(), POOLS)
    with pytest.raises(TypeError):
        bare.pools["x"] = POOLS["pool1"]  # type: ignore[index]
    with pytest.raises(TypeError):
        POOLS["pool1"].options["k"] = 1  # type: ignore[index]
    with pytest.raises(ProviderError):
        bare.pool_spec("nope")
