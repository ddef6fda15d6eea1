"""A Redis holding a VM in two sets at once (written by a racing process, or the original): the pool's
pass keeps it in the later set only, and nothing is handed out twice or destroyed by mistake."""

from __future__ import annotations

import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import FakeProvider, ManualClock, fast_config, ruby_time, write_vm
from vmpooler import keys

pytestmark = pytest.mark.integration


def sets_of(redis, pool: str, vm: str) -> set[str]:
    return {state for state in keys.STATES if redis.sismember(keys.state_set(state, pool), vm)}


def test_a_vm_in_ready_and_running_stays_running_only(start_pool_manager, redis):
    config = fast_config({"a": 1})
    clock = ManualClock()
    now = clock()
    fake = FakeProvider(config)
    fake.start()
    fake.inner.create_vm("a", "both")
    fake.inner.create_vm("a", "spare")
    write_vm(redis, "a", "spare", "ready", clone=ruby_time(now - 900), ready=ruby_time(now - 600))
    write_vm(redis, "a", "both", "running", clone=ruby_time(now - 900), checkout=ruby_time(now - 60))
    redis.sadd(keys.ready_set("a"), "both")  # the overlap
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: sets_of(redis, "a", "both") == {"running"}, 5, "left ready")
    assert sets_of(redis, "a", "spare") == {"ready"}
    assert fake.calls("destroy_vm", "both") == 0


def test_a_vm_in_running_and_completed_is_destroyed(start_pool_manager, redis):
    config = fast_config({"a": 0})
    clock = ManualClock()
    now = clock()
    fake = FakeProvider(config)
    fake.start()
    fake.inner.create_vm("a", "returned")
    write_vm(redis, "a", "returned", "running", clone=ruby_time(now - 900), checkout=ruby_time(now - 60))
    redis.sadd(keys.completed_set("a"), "returned")
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: fake.calls("destroy_vm", "returned") == 1, 5, "destroyed")
    wait_for(lambda: sets_of(redis, "a", "returned") == set(), 5, "out of every set")
    assert not redis.hexists(keys.active_hash("a"), "returned")
