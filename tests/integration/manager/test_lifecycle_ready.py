"""Ready VMs (as the original): ready TTL, vm_checktime, hostname mismatch, vm_ready failure."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import FakeProvider, ManualClock, fast_config, wait_passes, write_vm
from vmpooler import keys
from vmpooler.timeutil import format_time, parse_time

pytestmark = pytest.mark.integration


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def destroyed(redis, fake: FakeProvider, pool: str, vm: str) -> bool:
    """The VM left every set of its pool and the provider, and its metadata records the destroy."""
    return (
        vm not in fake.inventory().get(pool, [])
        and not redis.sismember(keys.ready_set(pool), vm)
        and not redis.sismember(keys.completed_set(pool), vm)
        and bool(redis.hget(keys.vm_hash(vm), "destroy"))
    )


def test_ready_vms_past_ready_ttl_are_destroyed_and_replaced(start_pool_manager, redis):
    config = fast_config({"a": 2, "b": 1}, pool_extra="    ready_ttl: 1\n")
    clock = ManualClock()
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: len(ready(redis, "a")) == 2 and len(ready(redis, "b")) == 1, 5, "pools full")
    old = ready(redis, "a") | ready(redis, "b")
    wait_passes(fake)
    assert ready(redis, "a") | ready(redis, "b") == old  # well within the TTL: kept

    clock.advance(61)
    wait_for(
        lambda: all(destroyed(redis, fake, "a", vm) or destroyed(redis, fake, "b", vm) for vm in old),
        5,
        "expired VMs destroyed",
    )
    wait_for(lambda: len(ready(redis, "a")) == 2 and len(ready(redis, "b")) == 1, 5, "pools refilled")
    assert not (ready(redis, "a") | ready(redis, "b")) & old
    assert fake.calls("create_vm") == 6


def test_vm_checktime_spaces_the_checks_of_a_ready_vm(start_pool_manager, redis):
    config = fast_config({"a": 2}, vm_checktime=1)
    clock = ManualClock()
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    vms = ready(redis, "a")
    checks = {vm: fake.calls("vm_ready", vm) for vm in vms}  # the pending checks so far

    wait_passes(fake)
    assert {vm: fake.calls("vm_ready", vm) for vm in vms} == checks  # just became ready: not due
    assert not any(redis.hget(keys.vm_hash(vm), "check") for vm in vms)

    now = clock.advance(61)
    wait_for(lambda: all(fake.calls("vm_ready", vm) == checks[vm] + 1 for vm in vms), 5, "one check each")
    for vm in vms:
        assert parse_time(redis.hget(keys.vm_hash(vm), "check")) == pytest.approx(now, abs=1)
    clock.advance(30)
    wait_passes(fake)
    assert all(fake.calls("vm_ready", vm) == checks[vm] + 1 for vm in vms)  # 30 s < vm_checktime

    clock.advance(31)
    wait_for(lambda: all(fake.calls("vm_ready", vm) == checks[vm] + 2 for vm in vms), 5, "second check")
    wait_passes(fake)
    assert all(fake.calls("vm_ready", vm) == checks[vm] + 2 for vm in vms)
    assert ready(redis, "a") == vms


def test_hostname_mismatch_is_only_checked_after_60_seconds_in_ready(start_pool_manager, redis):
    config = fast_config({"a": 2}, provider_options="    getvm_rename_percent: 100\n")
    clock = ManualClock()
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    old = ready(redis, "a")

    now = clock.advance(30)
    wait_for(
        lambda: all((parse_time(redis.hget(keys.vm_hash(vm), "check")) or 0) >= now - 1 for vm in old),
        5,
        "a ready check after 30 s",
    )
    wait_passes(fake)
    assert ready(redis, "a") == old  # 30 s in ready: the hostname is not looked at yet
    assert fake.calls("get_vm") == 0

    clock.advance(31)
    wait_for(lambda: all(destroyed(redis, fake, "a", vm) for vm in old), 5, "mismatched VMs destroyed")
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool refilled")
    assert not ready(redis, "a") & old


def test_hostname_mismatch_check_can_be_disabled_per_pool(start_pool_manager, redis):
    config = fast_config(
        {"a": 2},
        provider_options="    getvm_rename_percent: 100\n",
        pool_extra="    check_hostname_for_mismatch: false\n",
    )
    clock = ManualClock()
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    old = ready(redis, "a")

    now = clock.advance(120)
    wait_for(
        lambda: all((parse_time(redis.hget(keys.vm_hash(vm), "check")) or 0) >= now - 1 for vm in old),
        5,
        "a ready check after 120 s",
    )
    wait_passes(fake)
    assert ready(redis, "a") == old
    assert set(fake.inventory()["a"]) == old
    # the dummy would have reported a mismatch: it renames on every get_vm
    name = sorted(old)[0]
    assert fake.inner.get_vm("a", name).hostname == f"DUMMY{name}"


def test_ready_vm_whose_readiness_check_raises_is_completed(start_pool_manager, redis):
    config = fast_config({"a": 2}, provider_options="    vmready_fail_percent: 100\n")
    fake = FakeProvider(config)
    fake.start()
    now = time.time()
    old = {"t-taken-over-1", "t-taken-over-2"}
    for vm in old:
        fake.inner.create_vm("a", vm)
        write_vm(redis, "a", vm, "ready", clone=format_time(now - 60), ready=format_time(now - 30))
    start_pool_manager(config, provider=fake)
    wait_for(lambda: all(destroyed(redis, fake, "a", vm) for vm in old), 5, "unreachable VMs destroyed")
    assert all(fake.calls("vm_ready", vm) >= 1 for vm in old)
    # their replacements cannot become ready either (vm_ready raises): they wait in pending
    wait_for(lambda: redis.scard(keys.pending_set("a")) == 2, 5, "replacements pending")
    assert not ready(redis, "a")
