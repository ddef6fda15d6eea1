"""Starting on a Redis that already holds pools (a restart, or the original vmpooler's data)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import (
    FakeProvider,
    ManualClock,
    fast_config,
    in_any_set,
    ruby_time,
    wait_passes,
    write_vm,
)
from vmpooler import keys
from vmpooler.store import Pick
from vmpooler.timeutil import now_str

pytestmark = pytest.mark.integration


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def running(redis, pool: str) -> set[str]:
    return redis.smembers(keys.running_set(pool))


def test_restart_on_a_full_pool_reclones_and_destroys_nothing(
    run_manager, start_pool_manager, store, redis, tmp_path
):
    config = fast_config({"a": 3}, provider_options=f"    filename: {tmp_path / 'dummy.yaml'}\n")
    first = run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 3, 5, "pool full")
    (got,) = store.vms.checkout([Pick("a", ("a",))], now=now_str(), token="tok", user="alice")
    wait_for(lambda: len(ready(redis, "a")) == 3, 5, "checkout replaced")
    wait_for(lambda: redis.hget(keys.vm_hash(got.vm), "user_tagged") == "true", 5, "user tagged")
    first.stop()
    before_ready, before_inventory = ready(redis, "a"), first.provider.inventory()
    assert set(before_inventory["a"]) == before_ready | {got.vm}

    fake = FakeProvider(config)  # a new dummy that loads the inventory file
    start_pool_manager(config, provider=fake)
    wait_for(lambda: all(fake.calls("vm_ready", vm) for vm in before_ready), 5, "ready VMs checked")
    wait_passes(fake, 3)
    assert ready(redis, "a") == before_ready
    assert running(redis, "a") == {got.vm}
    assert fake.inventory() == before_inventory
    assert fake.calls("create_vm") == 0 and fake.calls("destroy_vm") == 0
    assert fake.calls("tag_vm_user") == 0  # the first process tagged it already


def test_takeover_of_the_original_vmpoolers_redis(start_pool_manager, redis):
    """Data written as the original does: Ruby time format in UTC, an active hash entry."""
    config = fast_config({"a": 2})
    clock = ManualClock()
    now = clock()
    fake = FakeProvider(config)
    fake.start()
    for vm in ("orig-ready-1", "orig-ready-2", "orig-running"):
        fake.inner.create_vm("a", vm)
    for vm in ("orig-ready-1", "orig-ready-2"):
        write_vm(
            redis,
            "a",
            vm,
            "ready",
            clone=ruby_time(now - 900),
            ready=ruby_time(now - 600),
            check=ruby_time(now - 10),
            domain="example.com",
        )
    write_vm(
        redis,
        "a",
        "orig-running",
        "running",
        clone=ruby_time(now - 7200),
        ready=ruby_time(now - 7000),
        checkout=ruby_time(now - 3600),
        lifetime="2",
        **{"token:token": "tok", "token:user": "bob"},
    )
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: fake.calls("tag_vm_user", "orig-running") == 1, 5, "running VM tagged")
    wait_passes(fake, 3)
    assert ready(redis, "a") == {"orig-ready-1", "orig-ready-2"}
    assert running(redis, "a") == {"orig-running"}
    assert fake.calls("create_vm") == 0 and fake.calls("destroy_vm") == 0
    # checked 10 s ago by the original (vm_checktime 0.6 s on the frozen clock: due now)
    assert [fake.calls("vm_ready", vm) for vm in ("orig-ready-1", "orig-ready-2")] == [1, 1]

    clock.advance(3600)  # 2 h since checkout: past its own lifetime
    wait_for(lambda: not in_any_set(redis, "a", "orig-running"), 5, "running VM expired")
    assert "orig-running" not in fake.inventory()["a"]
    assert not redis.hexists(keys.active_hash("a"), "orig-running")


def test_original_check_time_is_respected(start_pool_manager, redis):
    config = fast_config({"a": 1}, vm_checktime=1)
    clock = ManualClock()
    fake = FakeProvider(config)
    fake.start()
    fake.inner.create_vm("a", "orig-ready")
    write_vm(
        redis,
        "a",
        "orig-ready",
        "ready",
        clone=ruby_time(clock() - 900),
        ready=ruby_time(clock() - 600),
        check=ruby_time(clock() - 20),
    )
    start_pool_manager(config, provider=fake, clock=clock)
    wait_passes(fake, 3)
    assert fake.calls("vm_ready", "orig-ready") == 0  # checked 20 s ago; vm_checktime is 1 minute
    clock.advance(41)
    wait_for(lambda: fake.calls("vm_ready", "orig-ready") == 1, 5, "the check once due")
    assert ready(redis, "a") == {"orig-ready"}


def test_stale_vms_unknown_to_the_provider_are_cleaned_and_the_pool_refilled(start_pool_manager, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    now = time.time()
    old = ruby_time(now - 7200)
    stale = {
        "stale-ready-1": "ready",
        "stale-ready-2": "ready",
        "stale-pending": "pending",
        "stale-running": "running",
        "stale-completed": "completed",
    }
    for vm, state in stale.items():
        write_vm(redis, "a", vm, state, clone=old, ready=old, checkout=old)
    start_pool_manager(config, provider=fake)
    for vm in stale:
        wait_for(lambda v=vm: not in_any_set(redis, "a", v), 5, f"{vm} cleaned")
        assert redis.ttl(keys.vm_hash(vm)) != -1  # its metadata is not kept forever
    assert not redis.hgetall(keys.active_hash("a"))
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool refilled")
    assert set(fake.inventory()["a"]) == ready(redis, "a")
    assert not ready(redis, "a") & set(stale)
    assert fake.calls("create_vm") == 2
