"""Writes fenced by a pool's lease (``vmpooler.store.fencing``) against the real Redis: while the lease
holds the token every kind of write lands; once another manager holds it, none does, and nothing of a
refused write is left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmpooler import keys
from vmpooler.errors import Fenced
from vmpooler.model import VMState
from vmpooler.store import Store

pytestmark = pytest.mark.integration

POOL = "pool-a"


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    opened = Store.from_url(redis_url)
    yield opened
    opened.close()


def hold(store: Store, owner: str, ttl: int = 60_000) -> int:
    token = store.leases.claim([POOL], owner=owner, instance="i", pid=1, ttl_ms=ttl)[POOL]
    assert token is not None
    return token


def take_over(store: Store) -> int:
    """Another manager gets the lease (the first one's expired: released here to skip the wait)."""
    store.leases.release([POOL], owner="m-a", instance="i")
    return hold(store, "m-b")


def test_while_the_lease_is_held_every_kind_of_write_lands(store: Store) -> None:
    fenced = store.fenced(POOL, hold(store, "m-a"))
    assert fenced.vms.create_pending(POOL, "vm1", {"template": "t/a"})
    assert store.client.sismember(keys.pending_set(POOL), "vm1")
    fenced.client.hset(keys.vm_hash("vm1"), "note", "x")  # a plain write
    assert fenced.client.set("plain", "1") is True  # redis-py's reply shapes are kept
    assert store.client.hget(keys.vm_hash("vm1"), "note") == "x"
    with fenced.client.pipeline() as pipe:  # a MULTI with a write
        pipe.sadd("fenced-set", "a")
        pipe.scard("fenced-set")
        assert pipe.execute() == [1, 1]
    assert fenced.client.hgetall(keys.vm_hash("vm1"))["template"] == "t/a"  # reads as ever


def test_after_a_takeover_no_write_of_the_old_holder_lands(store: Store) -> None:
    fenced = store.fenced(POOL, hold(store, "m-a"))
    fenced.vms.create_pending(POOL, "vm1", {"template": "t/a"})
    take_over(store)
    before = {k: store.client.type(k) for k in store.client.keys("*")}
    with pytest.raises(Fenced):  # a script
        fenced.vms.create_pending(POOL, "vm2", {"template": "t/a"})
    with pytest.raises(Fenced):  # a transition script
        fenced.vms.move(POOL, "vm1", VMState.PENDING, VMState.READY)
    with pytest.raises(Fenced):  # a plain write through a store part
        fenced.pools.set_empty_flag(POOL, True)
    pipe = fenced.client.pipeline()
    pipe.sadd("fenced-set", "b")
    pipe.hset(keys.vm_hash("vm1"), "note", "late")
    with pytest.raises(Exception, match="FENCED"):  # a MULTI: nothing of it runs
        pipe.execute()
    assert {k: store.client.type(k) for k in store.client.keys("*")} == before
    assert store.client.smembers(keys.pending_set(POOL)) == {"vm1"}
    assert store.client.hget(keys.vm_hash("vm1"), "note") is None
    assert fenced.client.smembers(keys.pending_set(POOL)) == {"vm1"}  # reads are not fenced


def test_the_new_holder_writes_and_a_script_keeps_its_own_arguments(store: Store) -> None:
    hold(store, "m-a")
    fresh = store.fenced(POOL, take_over(store))
    script = fresh.client.register_script("return {#KEYS, #ARGV, KEYS[1], ARGV[#ARGV]}")
    assert script(keys=["k1"], args=["a", "b", "c"]) == [1, 3, "k1", "c"]
    assert fresh.vms.create_pending(POOL, "vm3", {"template": "t/a"})
