"""The pool configuration at runtime (``/config`` overrides, resets), the manager's side, against a real
redis-server and the dummy provider. Overrides are written as the API writes them (``store.pools``);
the oracles are the pool sets and the provider's own record of each VM's template."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import wait_for
from tests.integration.manager.conftest import make_config
from tests.integration.manager.helpers import CALL_THROUGH, FakeProvider, fast_config
from vmpooler import keys

pytestmark = pytest.mark.integration


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def templates(provider, pool: str) -> dict[str, str | None]:
    return {info.name: info.template for info in provider.list_vms(pool)}


def test_a_template_change_while_vms_are_pending_leaves_no_ready_vm_of_the_old_one(
    start_pool_manager, store, redis
):
    config = fast_config({"a": 3})
    fake = FakeProvider(config)
    fake.on("vm_ready", lambda *args: True)  # ready the moment its clone returns
    gate = threading.Event()
    gate.set()

    def held(*args: object) -> object:  # a clone waits at the gate, then the dummy makes it
        gate.wait(10)
        return CALL_THROUGH

    fake.on("create_vm", held)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 3, 10, "pool full")
    # two checkouts: their replacements are cloned from the old template, held in create_vm
    gate.clear()
    for vm in list(ready(redis, "a"))[:2]:
        redis.smove(keys.ready_set("a"), keys.running_set("a"), vm)
    redis.publish(keys.events_channel("a"), '{"event": "checkout", "pool": "a", "vm": "x"}')
    wait_for(lambda: redis.scard(keys.pending_set("a")) == 2, 5, "clones of the old template in flight")
    in_flight = redis.smembers(keys.pending_set("a"))
    store.pools.set_overrides("template", {"a": "templates/new"})
    took = lambda: redis.hget(keys.TEMPLATE_PREPARED, "a") == "templates/new"  # noqa: E731
    wait_for(took, 5, "the pool took the change")
    gate.set()  # the old clones finish now, after the change
    wait_for(
        lambda: (
            len(ready(redis, "a")) == 3
            and {templates(fake.inner, "a").get(vm) for vm in ready(redis, "a")} == {"templates/new"}
        ),
        15,
        "pool refilled from the new template",
    )
    for vm in in_flight:  # never ready: straight from pending to completed (then destroyed)
        data = redis.hgetall(keys.vm_hash(vm))
        assert data["clone_template"] == "templates/a"
        assert "ready" not in data
        wait_for(lambda vm=vm: vm not in templates(fake.inner, "a"), 5, "the old clone destroyed")
    for vm in ready(redis, "a"):
        assert redis.hget(keys.vm_hash(vm), "clone_template") == "templates/new"


def test_a_size_change_is_carried_out_within_a_second(run_manager, store, redis):
    # a slow loop: only the 'config' event can make it this quick
    config = make_config({"a": 5}, extra_config="  check_loop_delay_min: 30\n  check_loop_delay_max: 30\n")
    run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 5, 10, "pool full at 5")
    time.sleep(0.3)
    store.pools.set_overrides("poolsize", {"a": "20"})
    wait_for(lambda: len(ready(redis, "a")) == 20, 1.0, "20 ready within a second")
    store.pools.set_overrides("poolsize", {"a": "5"})
    wait_for(lambda: len(ready(redis, "a")) == 5, 1.0, "back to 5 within a second")
    store.pools.undo_override("poolsize", "a")
    time.sleep(0.3)
    assert len(ready(redis, "a")) == 5
    assert not redis.sismember(keys.UNDO_SIZE_OVERRIDE, "a")  # claimed by the pool's pass


def test_a_reset_drains_and_refills(run_manager, store, redis):
    config = make_config({"a": 4}, extra_config="  check_loop_delay_min: 30\n  check_loop_delay_max: 30\n")
    run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 4, 10, "pool full")
    before = ready(redis, "a")
    store.pools.request_reset(["a"])
    wait_for(lambda: len(ready(redis, "a")) == 4 and not ready(redis, "a") & before, 5, "a fresh pool")
    assert not redis.sismember(keys.POOLRESET, "a")


def test_undoing_a_template_override_goes_back_to_the_file(run_manager, store, redis):
    config = fast_config({"a": 2})
    store.pools.set_overrides("template", {"a": "templates/other"})  # set before the manager starts
    manager = run_manager(config)
    wait_for(
        lambda: (
            len(ready(redis, "a")) == 2
            and {templates(manager.provider, "a").get(vm) for vm in ready(redis, "a")} == {"templates/other"}
        ),
        10,
        "pool full from the override",
    )
    store.pools.undo_override("template", "a")
    wait_for(
        lambda: (
            len(ready(redis, "a")) == 2
            and {templates(manager.provider, "a").get(vm) for vm in ready(redis, "a")} == {"templates/a"}
        ),
        10,
        "pool refilled from the file's template",
    )
    assert redis.hget(keys.TEMPLATE_PREPARED, "a") == "templates/a"


def test_a_clone_target_change_drains_the_pool(run_manager, store, redis):
    config = fast_config({"a": 3})
    manager = run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 3, 10, "pool full")
    before = ready(redis, "a")
    store.pools.set_overrides("clone_target", {"a": "cluster2"})
    wait_for(lambda: len(ready(redis, "a")) == 3 and not ready(redis, "a") & before, 10, "refilled")
    assert manager.provider.pool_spec("a").clone_target == "cluster2"


def test_on_demand_vms_are_not_drained_by_a_shrink(run_manager, store, redis):
    config = fast_config({"a": 2}, provider_options="    createvm_max_time: 0.5\n")
    run_manager(config)
    wait_for(lambda: len(ready(redis, "a")) == 2, 10, "pool full")
    assert store.ondemand.create("r1", [("a", "a", 3)], time.time())
    wait_for(lambda: redis.scard(keys.pending_set("a")) == 3, 5, "on-demand clones pending")
    store.pools.set_overrides("poolsize", {"a": "1"})
    wait_for(lambda: redis.hget(keys.odrequest("r1"), "status") == "ready", 10, "request ready")
    assert redis.scard(keys.odrequest_vms("r1", "a", "a")) == 3
    wait_for(lambda: len(ready(redis, "a")) == 1, 5, "pool shrunk to 1")
