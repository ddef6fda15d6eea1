"""The manager against a real redis-server: pools fill, checkouts are replaced, VMs are destroyed."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.integration.manager.conftest import make_config
from vmpooler import keys
from vmpooler.store import Pick

pytestmark = pytest.mark.integration


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def test_pools_fill_to_size_from_empty(run_manager, redis):
    manager = run_manager(make_config({"a": 5, "b": 3}))
    wait_for(lambda: len(ready(redis, "a")) == 5 and len(ready(redis, "b")) == 3, 10, "pools full")
    inventory = manager.provider.inventory()
    assert set(inventory["a"]) == ready(redis, "a")
    assert set(inventory["b"]) == ready(redis, "b")
    for vm in ready(redis, "a"):
        assert vm.startswith("t-")
        data = redis.hgetall(keys.vm_hash(vm))
        assert data["template"] == "a" and data["pool"] == "a" and data["domain"] == "example.com"
        assert data["clone"] and data["ready"] and data["ip"]
    assert redis.get(keys.TASKS_CLONE) == "0"
    assert redis.zcard(keys.CLONE_LEASES) == 0


def test_checkout_is_replaced_without_waiting_for_the_loop(run_manager, store, redis):
    config = make_config({"a": 3}, extra_config="  check_loop_delay_max: 30\n  check_loop_delay_min: 30")
    run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 3, 10, "pool full")
    time.sleep(0.2)
    (got,) = store.vms.checkout([Pick("a", ("a",))], now="2026-11-21 10:00:00 +0000")
    # the loop delay is 30 s: only the checkout event can start the replacement
    wait_for(lambda: len(ready(redis, "a")) == 3, 3, "replacement ready")
    assert got.vm not in ready(redis, "a")
    assert redis.sismember(keys.running_set("a"), got.vm)


def test_returned_vm_is_destroyed_at_once(run_manager, store, redis):
    config = make_config({"a": 2}, extra_config="  check_loop_delay_max: 30\n  check_loop_delay_min: 30")
    manager = run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 2, 10, "pool full")
    (got,) = store.vms.checkout([Pick("a", ("a",))], now="2026-11-21 10:00:00 +0000")
    assert store.vms.return_vm(got.vm, "a")
    wait_for(lambda: got.vm not in manager.provider.inventory().get("a", []), 3, "destroyed in provider")
    wait_for(lambda: not redis.sismember(keys.completed_set("a"), got.vm), 3, "out of completed")
    assert redis.hget(keys.vm_hash(got.vm), "destroy")
    assert redis.ttl(keys.vm_hash(got.vm)) > 0


def test_task_limit_bounds_concurrent_clones(run_manager, redis):
    # every clone blocks in create_vm for up to 0.2 s while it holds its slot; 10 simulated
    # connections, so that only task_limit bounds the clones
    options = "    createvm_max_time: 0.2\n    connection_pool_size: 10"
    config = make_config({"a": 6}, task_limit=2, provider_options=options)
    run_manager(config)
    peak = 0
    deadline = time.monotonic() + 10
    while len(ready(redis, "a")) < 6 and time.monotonic() < deadline:
        peak = max(peak, redis.zcard(keys.CLONE_LEASES))
        time.sleep(0.01)
    assert len(ready(redis, "a")) == 6
    assert peak == 2
