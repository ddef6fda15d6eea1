"""A stop never leaks a clone slot, and a late removal never overwrites a clone's own record."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from prometheus_client import REGISTRY

from tests.integration.manager.conftest import make_config
from tests.support.waiting import wait_for
from vmpooler import keys
from vmpooler.actors.context import PoolContext
from vmpooler.actors.dispatch import Dispatcher
from vmpooler.actors.messages import DestroyNow
from vmpooler.actors.ticker import Ticker
from vmpooler.actors.vm import VMActor
from vmpooler.model import VMState
from vmpooler.worker import build_provider

pytestmark = pytest.mark.integration


def test_retire_from_a_state_only_if_the_vm_is_still_in_it(store, redis) -> None:
    assert store.vms.create_pending("a", "vm1", {"clone": "x"})
    store.vms.retire("a", "vm1", ttl_seconds=3600, fields={"clone_error": "the real failure"})
    # a second, late removal (an actor that saw the VM pending a moment ago) changes nothing
    late = store.vms.retire(
        "a", "vm1", ttl_seconds=3600, fields={"clone_error": "interrupted"}, src=VMState.PENDING
    )
    assert late is False
    assert redis.hget(keys.vm_hash("vm1"), "clone_error") == "the real failure"
    assert store.vms.create_pending("a", "vm2", {"clone": "x"})
    assert store.vms.retire("a", "vm2", ttl_seconds=0, src=VMState.PENDING) is True
    assert not redis.sismember(keys.pending_set("a"), "vm2") and not redis.exists(keys.vm_hash("vm2"))


@pytest.fixture
def vm_context(store) -> Iterator[tuple[PoolContext, Any]]:
    """A context for VM actors of pool ``a`` on the dummy provider (one dispatcher thread); the provider."""
    config = make_config({"a": 1})
    provider = build_provider(config, "dummy")
    provider.start()
    ticker = Ticker()
    ticker.start()
    threads = Dispatcher("test", 1)
    try:
        yield (
            PoolContext(
                config=config,
                pool=config.pool("a"),
                owner="dummy",
                provider=provider,
                store=store,
                ticker=ticker,
                pool_threads=threads,
                vm_threads=threads,
                rng=random.Random(1),
            ),
            provider,
        )
    finally:
        threads.stop()
        ticker.stop()
        provider.stop()


def test_a_vm_actor_stopped_before_its_clone_gives_slot_and_pending_entry_back(
    store, redis, vm_context
) -> None:
    ctx, provider = vm_context
    assert store.slots.acquire("dummy", "s1", limit=1, lease_seconds=600, pool="a")[0]
    assert store.vms.create_pending("a", "vm1", {"clone": "x", "pool": "a"})
    actor = VMActor.start(ctx, "vm1", None, "s1")  # the clone message never comes
    actor.stop(block=True, timeout=5)
    assert redis.zcard(keys.CLONE_LEASES) == 0 and redis.get(keys.TASKS_CLONE) == "0"
    assert not redis.sismember(keys.pending_set("a"), "vm1")
    assert provider.list_vms("a") == []


class _Gone(pykka.ThreadingActor):
    """A pool actor that has already stopped (its process stopping, or its lease handed over)."""


def test_a_vm_actor_whose_pool_actor_stopped_finishes_its_work_without_crashing(
    store, redis, vm_context
) -> None:
    ctx, _provider = vm_context
    labels = {"kind": "actor_crashed", "poolname": "a"}
    crashed = REGISTRY.get_sample_value("vmpooler_errors_total", labels) or 0.0
    gone = _Gone.start()
    gone.stop(block=True)
    assert store.vms.create_pending("a", "vm1", {"clone": "x", "pool": "a"})
    assert store.vms.move("a", "vm1", VMState.PENDING, VMState.COMPLETED)
    actor = VMActor.start(ctx, "vm1", gone)
    actor.tell(DestroyNow())  # destroys, retires, then reports to its (stopped) pool and stops
    assert wait_for(lambda: not actor.is_alive(), 10, "the VM actor to finish")
    assert not redis.sismember(keys.completed_set("a"), "vm1")
    assert (REGISTRY.get_sample_value("vmpooler_errors_total", labels) or 0.0) == crashed
