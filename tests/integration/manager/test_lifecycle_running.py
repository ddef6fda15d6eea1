"""Running VMs (as the original): lifetime, missing checkout time, vanished VMs, user tags."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import FakeProvider, fast_config, wait_passes
from vmpooler import keys
from vmpooler.store import Pick
from vmpooler.timeutil import format_time

pytestmark = pytest.mark.integration

HOUR = 3600


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def running(redis, pool: str) -> set[str]:
    return redis.smembers(keys.running_set(pool))


def cleaned(redis, fake: FakeProvider, pool: str, vm: str) -> bool:
    """Gone from the provider, every set and the active hash; metadata kept with a TTL."""
    return (
        vm not in fake.inventory()[pool]
        and not any(redis.sismember(keys.state_set(s, pool), vm) for s in keys.STATES)
        and not redis.hexists(keys.active_hash(pool), vm)
        and bool(redis.hget(keys.vm_hash(vm), "destroy"))
        and redis.ttl(keys.vm_hash(vm)) > 0
    )


def checkout(store, *, hours_ago: float = 0, **kwargs) -> str:
    (got,) = store.vms.checkout(
        [Pick("a", ("a",))], now=format_time(time.time() - hours_ago * HOUR), **kwargs
    )
    return got.vm


def test_running_vms_expire_after_their_lifetime(start_pool_manager, store, redis):
    config = fast_config({"a": 4}, extra_config="  vm_lifetime: 1\n")
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 4, 5, "pool full")
    own_expired = checkout(store, hours_ago=2, lifetime=1)
    default_expired = checkout(store, hours_ago=2)  # no lifetime field: vm_lifetime (1 h)
    own_longer = checkout(store, hours_ago=2, lifetime=3)  # its own lifetime wins
    fresh = checkout(store)

    wait_for(lambda: cleaned(redis, fake, "a", own_expired), 5, "VM past its own lifetime destroyed")
    wait_for(lambda: cleaned(redis, fake, "a", default_expired), 5, "VM past vm_lifetime destroyed")
    wait_passes(fake)
    assert running(redis, "a") == {own_longer, fresh}
    assert {own_longer, fresh} <= set(fake.inventory()["a"])
    wait_for(lambda: len(ready(redis, "a")) == 4, 5, "checkouts replaced")


def test_lifetime_zero_never_expires(start_pool_manager, store, redis):
    config = fast_config({"a": 2}, extra_config="  vm_lifetime: 0\n")
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    by_field = checkout(store, hours_ago=10_000, lifetime=0)
    by_default = checkout(store, hours_ago=10_000)  # vm_lifetime: 0
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "checkouts replaced")
    wait_passes(fake, 3)
    assert running(redis, "a") == {by_field, by_default}
    assert fake.calls("destroy_vm") == 0


def test_running_vm_without_checkout_time_is_completed(start_pool_manager, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    vm = sorted(ready(redis, "a"))[0]
    redis.smove(keys.ready_set("a"), keys.running_set("a"), vm)  # running, but no checkout recorded
    wait_for(lambda: cleaned(redis, fake, "a", vm), 5, "VM without checkout time destroyed")
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool refilled")


def test_running_vm_gone_from_the_provider_is_completed_and_cleaned(start_pool_manager, store, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    gone = checkout(store)
    kept = checkout(store)
    fake.remove_vm_behind_our_back("a", gone)
    wait_for(lambda: cleaned(redis, fake, "a", gone), 5, "vanished VM cleaned")
    assert running(redis, "a") == {kept}
    assert redis.hexists(keys.active_hash("a"), kept)


def test_running_vm_is_tagged_with_its_user_once(start_pool_manager, store, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    owned = checkout(store, token="tok-1", user="alice")
    anonymous = checkout(store)
    wait_for(lambda: redis.hget(keys.vm_hash(owned), "user_tagged") == "true", 5, "VM tagged")
    wait_passes(fake, 3)
    assert fake.calls("tag_vm_user", owned) == 1
    assert fake.calls("tag_vm_user", anonymous) == 0
    assert running(redis, "a") == {owned, anonymous}
