"""A checkout whose reply comes too late is undone, or never happens: the client was answered 503, so no
VM may stay running for it (real redis-server; the late reply is simulated at the client's end)."""

from __future__ import annotations

import os
from typing import Any

import pytest
import redis as redis_lib

from vmpooler import keys
from vmpooler.errors import StoreUnavailable
from vmpooler.store import Pick, Store

pytestmark = pytest.mark.integration


@pytest.fixture
def store(redis_url: str):
    s = Store.from_url(redis_url)
    yield s
    s.close()


def late(script: Any) -> Any:
    """The checkout script runs in Redis, but its reply is "lost": the client times out."""

    def call(**kwargs: Any) -> Any:
        script(**kwargs)
        raise redis_lib.TimeoutError("Timeout reading from socket")

    return call


def test_a_checkout_whose_reply_came_too_late_is_undone(store, redis):
    redis.sadd(keys.ready_set("a"), "vm1")
    redis.sadd(keys.ready_set("b"), "vm2")
    store.vms._checkout = late(store.vms._checkout)
    with pytest.raises(StoreUnavailable):
        store.vms.checkout([Pick("a", ("a",)), Pick("b", ("b",))], now="now", token="t", user="u", lifetime=2)
    assert redis.smembers(keys.ready_set("a")) == {"vm1"} and redis.smembers(keys.ready_set("b")) == {"vm2"}
    for pool, vm in (("a", "vm1"), ("b", "vm2")):
        assert not redis.smembers(keys.running_set(pool)) and not redis.smembers(keys.migrating_set(pool))
        assert not redis.hexists(keys.active_hash(pool), vm)
        assert not {"checkout", "token:token", "token:user", "lifetime"} & set(
            redis.hgetall(keys.vm_hash(vm))
        )
    (claim,) = redis.keys(keys.checkout_claim("*"))
    assert redis.get(claim) == "cancelled" and 0 < redis.ttl(claim) <= 300


def test_a_checkout_cancelled_before_it_ran_changes_nothing(store, redis, monkeypatch):
    redis.sadd(keys.ready_set("a"), "vm1")
    monkeypatch.setattr("vmpooler.store.vms._NONCES.next", lambda: "n1")  # this checkout's record name
    # the client gave up first (Redis frozen), its cancel ran first: the checkout finds it cancelled
    store.vms._cancel(keys=[keys.checkout_claim("n1")], args=[keys.vm_hash("")])
    with pytest.raises(StoreUnavailable):
        store.vms.checkout([Pick("a", ("a",))], now="now")
    assert redis.smembers(keys.ready_set("a")) == {"vm1"} and not redis.smembers(keys.running_set("a"))


def test_a_checkout_in_time_keeps_its_vms_and_a_record(store, redis):
    redis.sadd(keys.ready_set("a"), "vm1")
    (alloc,) = store.vms.checkout([Pick("a", ("a",))], now="now")
    assert alloc.vm == "vm1" and redis.smembers(keys.running_set("a")) == {"vm1"}
    (claim,) = redis.keys(keys.checkout_claim("*"))
    assert redis.get(claim) == "1:vm1" and 0 < redis.ttl(claim) <= 300


def test_every_checkout_has_a_record_of_its_own(store, redis):
    redis.sadd(keys.ready_set("a"), "vm1", "vm2", "vm3")
    for _ in range(3):
        store.vms.checkout([Pick("a", ("a",))], now="now")
    assert len(redis.keys(keys.checkout_claim("*"))) == 3


def test_a_forked_process_names_its_records_apart() -> None:
    # the records' names are a per-process prefix and a counter: a forked child must not reuse its
    # parent's prefix, or both would count up through the same names
    from vmpooler.store.vms import _NONCES

    parent = _NONCES.next()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next name, then out at once (no pytest teardown in a fork)
        os.write(write, _NONCES.next().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child.split("-")[0] != parent.split("-")[0]
