"""The pool pass against the provider's inventory (as the original), tasks, data TTL, size override
and pool reset."""

from __future__ import annotations

import time

import attrs
import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import FakeProvider, fast_config, in_any_set, wait_passes, write_vm
from vmpooler import keys
from vmpooler.errors import ProviderError
from vmpooler.store import Pick
from vmpooler.timeutil import format_time, now_str

pytestmark = pytest.mark.integration


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def full(redis, fake: FakeProvider, pool: str, size: int) -> bool:
    """The pool holds exactly ``size`` ready VMs, nothing else, and the provider has just those."""
    vms = ready(redis, pool)
    return (
        len(vms) == size
        and not redis.scard(keys.pending_set(pool))
        and not redis.scard(keys.completed_set(pool))
        and set(fake.inventory()[pool]) == vms
    )


def test_vms_unknown_to_redis_are_discovered_and_destroyed(start_pool_manager, redis):
    config = fast_config({"a": 2, "b": 1})
    fake = FakeProvider(config)
    fake.start()
    fake.inner.create_vm("a", "stray-a")
    fake.inner.create_vm("b", "stray-b")
    start_pool_manager(config, provider=fake)
    for pool, stray in (("a", "stray-a"), ("b", "stray-b")):
        wait_for(lambda p=pool, s=stray: s not in fake.inventory()[p], 5, f"{stray} destroyed")
        wait_for(lambda p=pool, s=stray: not in_any_set(redis, p, s), 5, f"{stray} out of every set")
        assert redis.hget(keys.vm_hash(stray), "destroy")
    wait_for(lambda: full(redis, fake, "a", 2) and full(redis, fake, "b", 1), 5, "pools full")
    assert fake.calls("destroy_vm") == 2


def test_discovered_vm_also_in_another_set_keeps_that_state(start_pool_manager, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: full(redis, fake, "a", 2), 5, "pool full")
    old = ready(redis, "a")
    vm = sorted(old)[0]
    redis.sadd(keys.discovered_set("a"), vm)
    wait_for(lambda: not redis.sismember(keys.discovered_set("a"), vm), 5, "removed from discovered")
    wait_passes(fake)
    assert ready(redis, "a") == old
    assert fake.calls("destroy_vm") == 0


def test_vms_gone_from_the_provider_are_cleaned_from_redis(start_pool_manager, redis):
    config = fast_config({"a": 3})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: full(redis, fake, "a", 3), 5, "pool full")
    lost = sorted(ready(redis, "a"))[0]
    fake.remove_vm_behind_our_back("a", lost)
    write_vm(redis, "a", "ghost-completed", "completed", clone=now_str(), checkout=now_str())
    wait_for(lambda: not in_any_set(redis, "a", lost), 5, "lost ready VM out of every set")
    wait_for(lambda: not in_any_set(redis, "a", "ghost-completed"), 5, "ghost out of completed")
    assert not redis.hexists(keys.active_hash("a"), "ghost-completed")
    assert redis.ttl(keys.vm_hash("ghost-completed")) != -1  # not kept forever
    wait_for(lambda: full(redis, fake, "a", 3), 5, "pool refilled")
    assert lost not in ready(redis, "a")


def test_inventory_failure_skips_the_pass_and_never_overfills(start_pool_manager, redis):
    config = fast_config({"a": 3})
    fake = FakeProvider(config)
    failing = [True]

    def list_vms(pool: str) -> object:
        if failing[0]:
            raise ProviderError("inventory unavailable")
        return fake.inner.list_vms(pool)

    fake.on("list_vms", list_vms)
    start_pool_manager(config, provider=fake)
    wait_passes(fake, 4)
    assert fake.calls("create_vm") == 0  # no pass ran: nothing cloned blind
    assert not redis.scard(keys.pending_set("a")) and not ready(redis, "a")

    failing[0] = False
    wait_for(lambda: full(redis, fake, "a", 3), 5, "pool full")
    wait_passes(fake)
    assert fake.calls("create_vm") == 3
    vms = ready(redis, "a")

    failing[0] = True
    wait_passes(fake, 4)
    failing[0] = False
    wait_passes(fake, 3)
    assert ready(redis, "a") == vms
    assert fake.calls("create_vm") == 3 and fake.calls("destroy_vm") == 0


def test_disk_snapshot_and_revert_tasks_are_done(start_pool_manager, store, redis):
    config = fast_config({"a": 1})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: full(redis, fake, "a", 1), 5, "pool full")
    (got,) = store.vms.checkout([Pick("a", ("a",))], now=now_str())
    vm = got.vm
    task_sets = (keys.TASKS_DISK, keys.TASKS_SNAPSHOT, keys.TASKS_SNAPSHOT_REVERT)

    store.tasks.queue("disk", vm, "a", "8")
    wait_for(lambda: redis.hget(keys.vm_hash(vm), "disk") == "+8gb", 5, "disk added")
    store.tasks.queue("snapshot", vm, "a", "clean")
    wait_for(lambda: redis.hget(keys.vm_hash(vm), "snapshot:clean"), 5, "snapshot taken")
    store.tasks.queue("disk", vm, "a", "16")
    wait_for(lambda: redis.hget(keys.vm_hash(vm), "disk") == "+8gb:+16gb", 5, "second disk added")
    store.tasks.queue("snapshot-revert", vm, "a", "clean")
    wait_for(lambda: fake.calls("revert_snapshot", vm) == 1, 5, "snapshot reverted")
    wait_passes(fake)
    assert not any(redis.scard(task_set) for task_set in task_sets)
    assert fake.calls("create_disk", vm) == 2 and fake.calls("create_snapshot", vm) == 1
    assert fake.calls("revert_snapshot", vm) == 1


def test_metadata_of_destroyed_vms_expires_after_data_ttl(start_pool_manager, store, redis):
    config = fast_config({"a": 1})
    config = attrs.evolve(config, redis=attrs.evolve(config.redis, data_ttl=2))
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: full(redis, fake, "a", 1), 5, "pool full")
    (got,) = store.vms.checkout([Pick("a", ("a",))], now=format_time(time.time()))
    assert store.vms.return_vm(got.vm, "a")
    wait_for(lambda: redis.hget(keys.vm_hash(got.vm), "destroy"), 5, "VM destroyed")
    assert 2 * 3600 - 30 < redis.ttl(keys.vm_hash(got.vm)) <= 2 * 3600
    assert redis.hget(keys.vm_hash(got.vm), "checkout")  # the metadata itself is kept until then


def test_pool_size_override_grows_and_shrinks_the_pool(start_pool_manager, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: full(redis, fake, "a", 2), 5, "pool full")

    redis.hset(keys.config_override("poolsize"), "a", "4")
    wait_for(lambda: full(redis, fake, "a", 4), 5, "pool grown to 4")
    redis.hset(keys.config_override("poolsize"), "a", "1")
    wait_for(lambda: full(redis, fake, "a", 1), 5, "pool shrunk to 1")
    wait_passes(fake)
    assert full(redis, fake, "a", 1)
    assert fake.calls("create_vm") == 4
    redis.hdel(keys.config_override("poolsize"), "a")
    wait_for(lambda: full(redis, fake, "a", 2), 5, "back to the configured size")


def test_pool_reset_replaces_every_vm(start_pool_manager, redis):
    config = fast_config({"a": 3, "b": 1})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: full(redis, fake, "a", 3) and full(redis, fake, "b", 1), 5, "pools full")
    old_a, old_b = ready(redis, "a"), ready(redis, "b")

    redis.sadd(keys.POOLRESET, "a")
    wait_for(lambda: full(redis, fake, "a", 3) and not ready(redis, "a") & old_a, 5, "pool a replaced")
    assert not redis.sismember(keys.POOLRESET, "a")
    assert all(redis.hget(keys.vm_hash(vm), "destroy") for vm in old_a)
    assert ready(redis, "b") == old_b  # only the pool asked for
