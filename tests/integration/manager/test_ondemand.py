"""On-demand requests, the manager's side, against a real redis-server and the dummy provider.

Requests are created as the API creates them (``store.ondemand.create``); the oracles are the request
hash, its VM sets, the pool sets, the lane counters and the provider's inventory.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import CALL_THROUGH, FakeProvider, ManualClock, fast_config
from vmpooler import keys
from vmpooler.errors import CloneFailed
from vmpooler.store.provisioning import TTL_FAILURE

pytestmark = pytest.mark.integration


def request_vms(redis, request_id: str, platforms) -> set[str]:
    found: set[str] = set()
    for alias, pool, _ in platforms:
        found |= redis.smembers(keys.odrequest_vms(request_id, alias, pool))
    return found


def status(redis, request_id: str) -> str | None:
    return redis.hget(keys.odrequest(request_id), "status")


def test_a_request_across_an_alias_of_two_pools_becomes_ready(run_manager, store, redis):
    config = fast_config({"a": 1, "b": 1}, extra_config="  vm_lifetime_auth: 3\n")
    manager = run_manager(config)
    both_full = lambda: redis.scard(keys.ready_set("a")) == 1 and redis.scard(keys.ready_set("b")) == 1  # noqa: E731
    wait_for(both_full, 10, "full")
    platforms = [("linux", "a", 2), ("linux", "b", 1)]
    assert store.ondemand.create("r1", platforms, time.time(), token="tok", user="alice")
    wait_for(lambda: status(redis, "r1") == "ready", 10, "request ready")
    vms = request_vms(redis, "r1", platforms)
    assert len(vms) == 3
    assert redis.scard(keys.odrequest_vms("r1", "linux", "a")) == 2
    assert not redis.zscore(keys.PROVISIONING_PROCESSING, "r1")
    assert not redis.zscore(keys.PROVISIONING_REQUEST, "r1")
    assert 2_592_000 - 30 < redis.ttl(keys.odrequest("r1")) <= 2_592_000
    for pool, alias_vms in (("a", 2), ("b", 1)):
        running = redis.smembers(keys.running_set(pool)) & vms
        assert len(running) == alias_vms
        for vm in running:
            data = redis.hgetall(keys.vm_hash(vm))
            assert data["request_id"] == "r1" and data["pool_alias"] == "linux"
            assert data["token:token"] == "tok" and data["token:user"] == "alice" and data["lifetime"] == "3"
            assert data["checkout"] and data["ready"]
            assert redis.hexists(keys.active_hash(pool), vm)
            assert vm in manager.provider.inventory()[pool]
    # the pools' own buffers are untouched: on-demand VMs are never the pool's ready VMs
    wait_for(both_full, 5, "buffers")
    assert not (redis.smembers(keys.ready_set("a")) | redis.smembers(keys.ready_set("b"))) & vms
    wait_for(lambda: redis.get(keys.TASKS_ONDEMANDCLONE) == "0", 5, "lane empty")
    assert redis.zcard(keys.ODCREATE_TASK) == 0


def test_a_request_that_cannot_be_met_in_its_ttl_fails_and_keeps_nothing(start_pool_manager, store, redis):
    clock = ManualClock()
    config = fast_config({"a": 0}, extra_config="  ondemand_request_ttl: 1\n")
    fake = FakeProvider(config)
    never_ready = threading.Event()
    fake.on("vm_ready", lambda *args: False if not never_ready.is_set() else CALL_THROUGH)
    start_pool_manager(config, provider=fake, clock=clock)
    assert store.ondemand.create("r2", [("a", "a", 2)], clock(), token=None, user=None)
    wait_for(lambda: fake.calls("create_vm") == 2, 10, "two clones")
    pending = set(redis.smembers(keys.pending_set("a")))
    assert len(pending) == 2
    clock.advance(61)
    wait_for(lambda: status(redis, "r2") == "failed", 15, "request failed by its ttl")
    data = redis.hgetall(keys.odrequest("r2"))
    assert data["failure_reason"] == TTL_FAILURE.format(ttl=1)
    assert 0 < redis.ttl(keys.odrequest("r2")) <= 168 * 3600
    never_ready.set()  # the VMs may become ready now: they must not go to the failed request
    wait_for(lambda: not fake.inventory()["a"], 10, "its VMs destroyed")
    assert not request_vms(redis, "r2", [("a", "a", 2)])
    assert not redis.smembers(keys.running_set("a")) and not redis.smembers(keys.ready_set("a"))
    assert not redis.zscore(keys.PROVISIONING_PROCESSING, "r2")


def test_a_deleted_request_loses_its_vms_and_gets_no_more(run_manager, store, redis):
    config = fast_config(
        {"a": 0}, extra_config="  ondemand_clone_limit: 1\n", provider_options="    createvm_max_time: 0.3\n"
    )
    manager = run_manager(config)
    assert store.ondemand.create("r3", [("a", "a", 4)], time.time())
    wait_for(lambda: redis.scard(keys.odrequest_vms("r3", "a", "a")) >= 1, 10, "a first VM for the request")
    assert store.ondemand.delete("r3") == "deleted"
    wait_for(lambda: not manager.provider.inventory()["a"], 10, "every VM of the request destroyed")
    time.sleep(1.0)  # a clone in flight at the delete finishes now: it must be destroyed, not kept
    wait_for(lambda: not manager.provider.inventory()["a"], 10, "nothing left")
    assert not redis.smembers(keys.running_set("a")) and not redis.smembers(keys.pending_set("a"))
    assert redis.zcard(keys.ODCREATE_TASK) == 0
    assert status(redis, "r3") == "deleted"
    assert redis.get(keys.TASKS_ONDEMANDCLONE) == "0"


def test_with_half_the_clones_failing_the_request_completes_within_its_retries(run_manager, store, redis):
    config = fast_config(
        {"a": 0}, extra_config="  max_vm_retries: 30\n", provider_options="    createvm_fail_percent: 50\n"
    )
    run_manager(config, seed=7)
    assert store.ondemand.create("r4", [("a", "a", 5)], time.time())
    wait_for(lambda: status(redis, "r4") == "ready", 20, "request ready despite failures")
    retries = int(redis.hget(keys.odrequest("r4"), "retry_count") or 0)
    assert 0 < retries <= 30  # with 50 % failing, some of the clones failed and were retried
    assert redis.scard(keys.odrequest_vms("r4", "a", "a")) == 5


def test_a_request_gives_up_after_max_vm_retries(run_manager, store, redis):
    config = fast_config(
        {"a": 0}, extra_config="  max_vm_retries: 2\n", provider_options="    createvm_fail_percent: 100\n"
    )
    manager = run_manager(config)
    assert store.ondemand.create("r5", [("a", "a", 1)], time.time())
    wait_for(lambda: status(redis, "r5") == "failed", 10, "request failed")
    data = redis.hgetall(keys.odrequest("r5"))
    assert data["failure_reason"] == "Max retry attempts exceeded"
    assert data["retry_count"] == "2"
    time.sleep(0.5)
    assert manager.provider.inventory()["a"] == []
    assert redis.zcard(keys.ODCREATE_TASK) == 0


def test_a_permanent_error_fails_the_request_at_once(start_pool_manager, store, redis):
    config = fast_config({"a": 0}, extra_config="  max_vm_retries: 5\n")
    fake = FakeProvider(config)

    def broken(pool, name):
        raise CloneFailed(f"pool {pool} specifies a template VM of x which does not exist", transient=False)

    fake.on("create_vm", broken)
    start_pool_manager(config, provider=fake)
    assert store.ondemand.create("r6", [("a", "a", 1)], time.time())
    wait_for(lambda: status(redis, "r6") == "failed", 10, "request failed")
    data = redis.hgetall(keys.odrequest("r6"))
    assert data["failure_reason"].startswith("Configuration error: pool a specifies a template VM")
    assert "retry_count" not in data
    assert fake.calls("create_vm") == 1


def test_the_ondemand_clone_limit_is_its_own_lane(start_pool_manager, store, redis):
    config = fast_config(
        {"a": 2, "b": 0},
        task_limit=1,
        extra_config="  ondemand_clone_limit: 2\n",
        provider_options="    createvm_max_time: 0.2\n",
    )
    fake = FakeProvider(config)
    lock = threading.Lock()
    in_flight = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}

    def counting(pool, name):
        with lock:
            in_flight[pool] += 1
            peak[pool] = max(peak[pool], in_flight[pool])
        try:
            return fake.inner.create_vm(pool, name)
        finally:
            with lock:
                in_flight[pool] -= 1

    fake.on("create_vm", counting)
    start_pool_manager(config, provider=fake)
    assert store.ondemand.create("r7", [("b", "b", 6)], time.time())
    wait_for(lambda: status(redis, "r7") == "ready", 20, "request ready")
    wait_for(lambda: redis.scard(keys.ready_set("a")) == 2, 10, "pool a full beside it")
    assert peak["b"] == 2  # the lane's limit, reached and never passed
    assert peak["a"] == 1  # task_limit, untouched by the on-demand clones
