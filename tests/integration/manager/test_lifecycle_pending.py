"""Pending VMs and clones: readiness, timeouts, failed clones and their clean-up."""

from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import REGISTRY

from tests.conftest import wait_for
from tests.integration.manager.helpers import (
    FakeProvider,
    ManualClock,
    fast_config,
    ruby_time,
    wait_passes,
    write_vm,
)
from vmpooler import keys

pytestmark = pytest.mark.integration

MINUTE = 60
NEVER_READY = "    ready_delay: 100000\n"


def pending(redis, pool: str) -> set[str]:
    return redis.smembers(keys.pending_set(pool))


def errors(kind: str, pool: str) -> float:
    return REGISTRY.get_sample_value("vmpooler_errors_total", {"kind": kind, "poolname": pool}) or 0.0


def one_pending(redis) -> str:
    wait_for(lambda: len(pending(redis, "a")) == 1, 5, "a pending VM")
    (vm,) = pending(redis, "a")
    return vm


def test_pending_vm_past_timeout_is_completed_and_destroyed(start_pool_manager, redis):
    config = fast_config({"a": 1}, provider_options=NEVER_READY)
    clock, fake = ManualClock(), FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    vm = one_pending(redis)
    failed_before = errors("markedasfailed", "a")
    wait_passes(fake)
    assert pending(redis, "a") == {vm}  # not ready, not timed out: it waits

    clock.advance(15 * MINUTE + 1)  # timeout: 15 minutes
    wait_for(lambda: vm not in fake.inventory()["a"], 5, "timed-out VM destroyed")
    wait_for(lambda: not redis.sismember(keys.completed_set("a"), vm), 5, "out of completed")
    assert redis.hget(keys.vm_hash(vm), "destroy")
    assert not redis.sismember(keys.pending_set("a"), vm)
    assert errors("markedasfailed", "a") == failed_before + 1
    wait_for(lambda: pending(redis, "a") - {vm}, 5, "a replacement clone")


def test_pending_vm_whose_readiness_check_raises_still_times_out(start_pool_manager, redis):
    config = fast_config({"a": 1}, provider_options="    vmready_fail_percent: 100\n")
    clock, fake = ManualClock(), FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    vm = one_pending(redis)
    wait_for(lambda: fake.calls("vm_ready", vm) >= 2, 5, "readiness checks")
    clock.advance(15 * MINUTE + 1)
    wait_for(lambda: vm not in fake.inventory()["a"], 5, "timed-out VM destroyed")
    assert redis.hget(keys.vm_hash(vm), "destroy")
    assert not redis.sismember(keys.pending_set("a"), vm)


def test_timeout_notification_is_set_once(start_pool_manager, redis, caplog):
    caplog.set_level(logging.INFO, logger="vmpooler")
    config = fast_config({"a": 1}, provider_options=NEVER_READY)
    clock, fake = ManualClock(), FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    vm = one_pending(redis)
    wait_passes(fake)
    assert not redis.hexists(keys.vm_hash(vm), "timeout_notification")

    clock.advance(6 * MINUTE)  # past timeout_notification (5), before timeout (15)
    wait_for(lambda: redis.hget(keys.vm_hash(vm), "timeout_notification") == "1", 5, "notification")
    checks = fake.calls("vm_ready", vm)
    wait_for(lambda: fake.calls("vm_ready", vm) >= checks + 3, 5, "more pending checks")
    clock.advance(MINUTE)
    wait_for(lambda: fake.calls("vm_ready", vm) >= checks + 6, 5, "more pending checks")
    warnings = [r for r in caplog.records if f"vm={vm}]" in r.getMessage() and "impending" in r.getMessage()]
    assert len(warnings) == 1
    assert pending(redis, "a") == {vm}


def test_pending_vm_gone_from_the_provider_is_removed_after_the_timeout(start_pool_manager, redis):
    config = fast_config({"a": 1}, provider_options=NEVER_READY)
    clock, fake = ManualClock(), FakeProvider(config)
    start_pool_manager(config, provider=fake, clock=clock)
    vm = one_pending(redis)
    # a VM is in pending before create_vm makes it: remove it once the provider has it
    wait_for(lambda: vm in fake.inner.inventory()["a"], 5, "the clone made")
    fake.remove_vm_behind_our_back("a", vm)
    wait_passes(fake)
    assert pending(redis, "a") == {vm}  # before the timeout it may still appear

    clock.advance(15 * MINUTE + 1)
    wait_for(lambda: not redis.sismember(keys.pending_set("a"), vm), 5, "removed from pending")
    assert not any(redis.sismember(keys.state_set(s, "a"), vm) for s in keys.STATES)
    ttl = redis.ttl(keys.vm_hash(vm))
    assert 168 * 3600 - 30 < ttl <= 168 * 3600  # data_ttl (168 h)
    assert fake.calls("destroy_vm", vm) == 0


def test_failed_clone_is_recorded_and_its_slot_released(start_pool_manager, store, redis):
    config = fast_config({"a": 2}, task_limit=1, provider_options="    createvm_fail_percent: 100\n")
    fake = FakeProvider(config)
    failed_before = errors("clone_failed", "a")  # before the manager starts: its clones fail at once
    manager = start_pool_manager(config, provider=fake)
    # with one clone slot, a leaked slot would stop the pool after the first failure
    wait_for(lambda: fake.calls("create_vm") >= 6, 5, "the pool keeps trying")
    wait_for(
        lambda: redis.zcard(keys.CLONE_LEASES) == 0 and redis.get(keys.TASKS_CLONE) == "0", 5, "free slots"
    )
    manager.stop()
    assert redis.zcard(keys.CLONE_LEASES) == 0 and redis.get(keys.TASKS_CLONE) == "0"
    assert not pending(redis, "a") and not redis.smembers(keys.ready_set("a"))
    assert fake.inventory()["a"] == []
    failed = [k for k in redis.scan_iter(keys.vm_hash("*")) if redis.hexists(k, "clone_error")]
    assert len(failed) == fake.calls("create_vm") >= 6
    assert errors("clone_failed", "a") == failed_before + len(failed)
    for key in failed:
        data = redis.hgetall(key)
        assert data["clone_error_class"] == "CloneFailed"
        assert "simulated clone failure" in data["clone_error"]
        assert 168 * 3600 - 30 < redis.ttl(key) <= 168 * 3600


def test_adopted_pending_vm_the_provider_never_got_is_removed_at_once(start_pool_manager, redis):
    """A clone that died with an earlier process: the pool must not stay short until the timeout."""
    config = fast_config({"a": 1})
    write_vm(redis, "a", "orphan-clone", "pending", clone=ruby_time(time.time()))
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: not redis.sismember(keys.pending_set("a"), "orphan-clone"), 5, "orphan removed")
    assert "not in the provider" in redis.hget(keys.vm_hash("orphan-clone"), "clone_error")
    wait_for(lambda: redis.scard(keys.ready_set("a")) == 1, 5, "pool refilled")
    assert fake.calls("destroy_vm", "orphan-clone") == 0
