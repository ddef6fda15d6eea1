"""A clone holds its clone slot for as long as the provider's ``create_vm`` takes.

The dummy's ``createvm_max_time`` is the time ``create_vm`` blocks, as in the original; the VMActor gives
its slot back only when ``create_vm`` returns, so ``task_limit`` bounds the clones in flight.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.manager.conftest import make_config
from vmpooler import keys
from vmpooler.config import Config
from vmpooler.model import VMInfo
from vmpooler.providers.dummy import DummyProvider
from vmpooler.worker import build_provider

pytestmark = pytest.mark.integration


class RecordingDummy(DummyProvider):
    """The real DummyProvider, recording when each ``create_vm`` call starts and ends (monotonic)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._spans_lock = threading.Lock()
        self._spans: dict[str, tuple[float, float]] = {}

    def create_vm(self, pool: str, name: str) -> VMInfo:
        started = time.monotonic()
        try:
            return super().create_vm(pool, name)
        finally:
            ended = time.monotonic()
            with self._spans_lock:
                self._spans[name] = (started, ended)

    def spans(self) -> list[tuple[float, float]]:
        """(start, end) of every finished ``create_vm``, in order of start."""
        with self._spans_lock:
            return sorted(self._spans.values())


def recording_dummy(config: Config) -> RecordingDummy:
    built = build_provider(config, "dummy")
    return RecordingDummy(built.name, built.settings, built.pools)


def test_a_clone_holds_its_slot_for_createvm_max_time(run_manager, redis) -> None:
    # An integer createvm_max_time of 1 is the original's 1 + rand(1): exactly one second. Three
    # connections, so that the provider itself never makes a clone wait.
    options = "    createvm_max_time: 1\n    connection_pool_size: 3\n"
    config = make_config({"a": 3}, task_limit=2, provider_options=options)
    provider = recording_dummy(config)
    run_manager(config, provider=provider)

    wait_for(lambda: len(provider.spans()) == 3, 10, "three clones")
    first, second, third = provider.spans()
    for start, end in (first, second, third):
        assert end - start >= 0.99  # create_vm blocked for the clone's second
    assert second[0] < first[1], "the first two clones did not run at the same time"
    assert third[0] >= min(first[1], second[1]), "the third clone started while two held the slots"
    wait_for(lambda: len(redis.smembers(keys.ready_set("a"))) == 3, 5, "pool full")
    assert redis.get(keys.TASKS_CLONE) == "0"


def test_a_released_slot_wakes_a_pool_that_waited_for_one(run_manager, redis) -> None:
    # One slot, two pools, and passes only every 30 s: the second pool's clone can only start when
    # the first clone's released slot wakes it (a 'slot' event), not on a pass.
    options = "    createvm_max_time: 1\n    connection_pool_size: 2\n"
    pool_extra = "    check_loop_delay_min: 30\n    check_loop_delay_max: 30\n"
    config = make_config({"a": 1, "b": 1}, task_limit=1, provider_options=options, pool_extra=pool_extra)
    provider = recording_dummy(config)
    run_manager(config, provider=provider)

    wait_for(lambda: len(provider.spans()) == 2, 10, "both clones")
    first, second = provider.spans()
    assert second[0] >= first[1], "two clones held the one slot"
    assert second[0] - first[1] < 0.5, f"the waiting pool started {second[0] - first[1]:.2f} s after the slot"
    assert redis.zcard(keys.CLONE_WAITING) == 0


def test_buffer_refills_leave_half_the_slots_to_pools_that_checkouts_wait_for(store, redis):
    def take(slot: str, pool: str) -> bool:
        return store.slots.acquire("dummy", slot, limit=4, lease_seconds=600, pool=pool)[0]

    assert [take(f"b{i}", "buffer") for i in range(3)] == [True, True, True]  # nobody waits: all four
    store.slots.release("dummy", "b2")
    redis.hset(keys.QUEUE_DEMAND, "wanted", 2)  # checkouts now wait for the pool "wanted"
    assert not take("b3", "buffer")  # two in use: a buffer refill may use only the lower half
    assert [take(f"w{i}", "wanted") for i in range(3)] == [True, True, False]  # the waited-for pool: all
    redis.hdel(keys.QUEUE_DEMAND, "wanted")
    store.slots.release("dummy", "w0")
    assert take("b3", "buffer")  # nobody waits any more: every slot again
