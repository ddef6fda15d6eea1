"""Supervision inside the provider process (STYLE 14): a crashed VMActor is recreated from Redis by
its PoolActor, and a dead PoolActor is started again by the ProviderActor."""

from __future__ import annotations

import logging
import threading

import pykka
import pytest

from tests.conftest import wait_for
from tests.integration.manager.helpers import CALL_THROUGH, FakeProvider, fast_config, wait_passes
from vmpooler import keys
from vmpooler.actors.pool import PoolActor
from vmpooler.store import Pick
from vmpooler.timeutil import now_str

pytestmark = pytest.mark.integration


def ready(redis, pool: str) -> set[str]:
    return redis.smembers(keys.ready_set(pool))


def crashes(caplog, vm: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and f"vm={vm}]" in r.getMessage() and "actor crashed" in r.getMessage()
    ]


def raise_once(vms: set[str] | None = None, then: object = CALL_THROUGH):
    """A ``vm_ready`` hook: the first call (for one of ``vms``, if given) raises an unexpected
    ``RuntimeError``; later calls for that VM return ``then``."""
    lock = threading.Lock()
    victim: list[str] = []

    def hook(pool: str, name: str) -> object:
        with lock:
            if not victim and (vms is None or name in vms):
                victim.append(name)
                raise RuntimeError(f"unexpected failure checking {name}")
            return then if victim and name == victim[0] else CALL_THROUGH

    hook.victim = victim  # type: ignore[attr-defined]
    return hook


def test_vm_actor_crashing_while_pending_is_recreated_and_the_vm_becomes_ready(
    start_pool_manager, redis, caplog
):
    caplog.set_level(logging.INFO, logger="vmpooler")
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    hook = raise_once()
    fake.on("vm_ready", hook)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    (victim,) = hook.victim
    assert victim in ready(redis, "a")  # the same VM: handled by a new actor, not re-cloned
    assert fake.calls("create_vm") == 2
    assert crashes(caplog, victim)
    assert redis.zcard(keys.CLONE_LEASES) == 0 and redis.get(keys.TASKS_CLONE) == "0"


def test_vm_actor_crashing_in_a_ready_check_is_recreated_and_checks_go_on(start_pool_manager, redis, caplog):
    caplog.set_level(logging.INFO, logger="vmpooler")
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    old = ready(redis, "a")
    victim = sorted(old)[0]
    # the first check crashes the actor; the recreated actor's check finds the VM unreachable
    fake.on("vm_ready", raise_once({victim}, then=False))
    wait_for(lambda: crashes(caplog, victim), 5, "the actor crash")
    wait_for(lambda: victim not in fake.inventory()["a"], 5, "the VM destroyed by the new actor")
    # destroy_vm returns before the store records it: wait for the record, not just the provider
    wait_for(lambda: redis.hget(keys.vm_hash(victim), "destroy"), 5, "the destroy recorded")
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool refilled")
    assert ready(redis, "a") & old == old - {victim}


def test_stopped_pool_actor_is_restarted_and_takes_over_its_vms(start_pool_manager, store, redis):
    config = fast_config({"a": 2})
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "pool full")
    old = ready(redis, "a")
    (first,) = pykka.ActorRegistry.get_by_class(PoolActor)
    first.stop()

    def restarted() -> list[pykka.ActorRef]:
        return [ref for ref in pykka.ActorRegistry.get_by_class(PoolActor) if ref is not first]

    wait_for(restarted, 6.5, "the pool actor restarted by supervision")
    wait_passes(fake)
    assert ready(redis, "a") == old  # adopted from Redis: nothing re-cloned or destroyed
    assert fake.calls("create_vm") == 2 and fake.calls("destroy_vm") == 0
    (got,) = store.vms.checkout([Pick("a", ("a",))], now=now_str())
    wait_for(lambda: len(ready(redis, "a")) == 2, 5, "the checkout replaced by the new pool actor")
    assert redis.sismember(keys.running_set("a"), got.vm)
    assert fake.calls("create_vm") == 3
